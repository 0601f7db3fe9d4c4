"""The tutorial in examples/ is run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_runs_and_resumes_to_the_same_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(ROOT / "examples" / "tutorial.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Hindi extraction strength of the first continuation" in out
    assert "rerun computed 0 unit(s); same report: True" in out
    assert "why `" in out

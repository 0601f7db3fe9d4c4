"""Import an earlier revision of mmie next to the working one, for side-by-side timings.

``baseline("dada5f9")`` extracts ``src/mmie`` of that git revision into a temporary
directory as a package named ``mmie_base`` (every ``mmie`` import and module path rewritten),
puts it on ``sys.path`` and returns it. Both versions then run in one process, on the same
machine load, so a benchmark can interleave their repeats and report a ratio of medians
instead of comparing two runs minutes apart on a shared CPU.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]

#: The revision before the throughput work (``git log``: "README tour and methods ...").
BASELINE_REV = "dada5f9"

_PATTERNS = [
    (re.compile(r"\bfrom mmie(?=[.\s])"), "from mmie_base"),
    (re.compile(r"\bimport mmie(?=[.\s])"), "import mmie_base"),
    (re.compile(r"([\"'])mmie\."), r"\1mmie_base."),
    (re.compile(r"resources\.files\(\"mmie\"\)"), 'resources.files("mmie_base")'),
]


def baseline(rev: str = BASELINE_REV) -> ModuleType:
    """The package ``mmie_base``: mmie as of git revision ``rev`` (imported once)."""
    if "mmie_base" in sys.modules:
        return sys.modules["mmie_base"]
    target = Path(tempfile.mkdtemp(prefix="mmie_base_"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src/mmie"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = target / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(target, filter="data")
    package = target / "mmie_base"
    (target / "src" / "mmie").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        path.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(target))
    return importlib.import_module("mmie_base")

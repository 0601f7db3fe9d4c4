"""Sphinx configuration for the mmie documentation."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from mmie import __version__  # noqa: E402

project = "mmie"
author = "mmie developers"
copyright = "2026, mmie developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
try:  # Markdown pages (benchmarks) need myst; fall back to rst-only builds without it.
    import myst_parser  # noqa: F401

    extensions.append("myst_parser")
except ImportError:
    source_suffix = {".rst": "restructuredtext"}

exclude_patterns = ["_build", "_inventories"]
templates_path: list[str] = []

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Cross-references into the docs of the libraries mmie builds on. The inventories are
# shipped in docs/_inventories (the docs build runs offline in CI); each maps names to the
# projects' public documentation URLs.
_INV = HERE / "_inventories"
_intersphinx_targets = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "transformers": "https://huggingface.co/docs/transformers/main/en/",
    "peft": "https://huggingface.co/docs/peft/main/en/",
}
intersphinx_mapping = {
    name: (url, str(_INV / f"{name}.inv")) for name, url in _intersphinx_targets.items()
}
intersphinx_timeout = 5

# Nitpicky builds (CI runs ``sphinx -n -W``): every cross-reference must resolve, except the
# ones below. Third-party types whose documentation is not in the shipped inventories (or
# that autodoc prints by their private module path, e.g. torch.nn.modules.module.Module),
# and mmie's own Literal type aliases, which the signatures show by name.
nitpicky = True
_THIRD_PARTY = (
    r"(torch|transformers|numpy|np|scipy|peft|safetensors|tqdm|os|collections|contextlib|"
    r"typing|typing_extensions|random|pathlib|nn|npt)(\..+)?"
)
_SHORT_NAMES = (
    r"(Tensor|Module|PreTrainedTokenizerBase|PreTrainedTokenizerFast|PreTrainedModel|"
    r"BatchEncoding|LogitsProcessor|Parameter|LongTensor|Path|Iterator|Callable|Sequence|"
    r"Mapping|Self|ArrayLike|NDArray)"
)
_ALIASES = (
    r"(Objective|Schedule|LRSchedule|Init|Positions|ErasureMethod|MIAAttack|Architecture|"
    r"Scale|CIMethod|CIMethodName|Alternative|Dtype|Reference|Activity|Edit|GateStatus|"
    r"Decision|Records|MetricRecords|DemoModel|TopKPrecision|T)"
)
nitpick_ignore_regex = [
    (r"py:.*", _THIRD_PARTY),
    (r"py:.*", _SHORT_NAMES),
    (r"py:.*", _ALIASES),
]

html_theme = "furo"
html_title = f"mmie {release}"


# --------------------------------------------------------------------------- config fields
# The config dataclasses document each field with a trailing comment on its line
# (``steps: int = 100  # optimizer steps``). Show those comments, with the defaults, under
# each class in the API pages, so the rendered docs say what every field means.
def _field_comments(cls: type) -> dict[str, str]:
    """``field name -> trailing comment`` for the annotated fields in ``cls``'s body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    return {
        node.target.id: comments[node.end_lineno]
        for node in body.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.end_lineno in comments
    }


def _rst_escape(text: str) -> str:
    return re.sub(r"([\\*`|_])", r"\\\1", text)


def _default_text(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    if f.default is not dataclasses.MISSING:
        return f"``{f.default!r}``"
    factory = f.default_factory
    if factory is dataclasses.MISSING:
        return "required"
    if isinstance(factory, type):
        return f"``{factory.__name__}()``"
    return "computed"


def _document_fields(app, what, name, obj, options, lines):
    if what != "class" or not dataclasses.is_dataclass(obj):
        return
    if not getattr(obj, "__module__", "").startswith("mmie."):
        return
    comments = _field_comments(obj)
    fields = [f for f in dataclasses.fields(obj) if f.name in comments]
    if not fields:
        return
    lines += ["", ".. rubric:: Fields", ""]
    for f in fields:
        lines.append(f"* **{f.name}** = {_default_text(f)}: {_rst_escape(comments[f.name])}")
    lines.append("")


def _public_bases(app, name, obj, options, bases):
    """Drop private base classes (``mmie._config.ConfigBase``, ``_DetectorBase``) from the
    "Bases:" line: they are implementation details, not part of the documented API."""
    bases[:] = [
        b
        for b in bases
        if not (
            getattr(b, "__module__", "").startswith("mmie")
            and (b.__name__.startswith("_") or b.__module__.startswith("mmie._"))
        )
    ]


def setup(app):
    app.connect("autodoc-process-docstring", _document_fields)
    app.connect("autodoc-process-bases", _public_bases)

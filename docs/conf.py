"""Sphinx configuration for the mmie documentation."""

from __future__ import annotations

import sys
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

html_theme = "furo"
html_title = f"mmie {release}"

"""Write the small Sphinx inventories used for offline intersphinx links.

CI builds the docs without network access, so the inventories of the projects mmie links to
are shipped here. Each lists the handful of objects mmie's docs refer to, with their URLs
relative to the project's public documentation root (configured in ``docs/conf.py``).
Run ``python docs/_inventories/make_inventories.py`` after adding an entry.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project -> (version, [(name, domain:role, uri)])
ENTRIES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "torch": (
        "2",
        [
            ("torch.Tensor", "py:class", "tensors.html#torch.Tensor"),
            ("torch.device", "py:class", "tensor_attributes.html#torch.device"),
            ("torch.dtype", "py:class", "tensor_attributes.html#torch.dtype"),
            ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
            (
                "torch.nn.ModuleList",
                "py:class",
                "generated/torch.nn.ModuleList.html#torch.nn.ModuleList",
            ),
            (
                "torch.nn.Parameter",
                "py:class",
                "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter",
            ),
            ("torch.Generator", "py:class", "generated/torch.Generator.html#torch.Generator"),
        ],
    ),
    "transformers": (
        "5",
        [
            (
                "transformers.PreTrainedModel",
                "py:class",
                "main_classes/model#transformers.PreTrainedModel",
            ),
            (
                "transformers.PreTrainedTokenizerBase",
                "py:class",
                "main_classes/tokenizer#transformers.PreTrainedTokenizerBase",
            ),
            (
                "transformers.PreTrainedTokenizerFast",
                "py:class",
                "main_classes/tokenizer#transformers.PreTrainedTokenizerFast",
            ),
            (
                "transformers.BatchEncoding",
                "py:class",
                "main_classes/tokenizer#transformers.BatchEncoding",
            ),
            (
                "transformers.LogitsProcessor",
                "py:class",
                "internal/generation_utils#transformers.LogitsProcessor",
            ),
            (
                "transformers.GenerationConfig",
                "py:class",
                "main_classes/text_generation#transformers.GenerationConfig",
            ),
        ],
    ),
    "peft": (
        "0",
        [
            ("peft.PeftModel", "py:class", "package_reference/peft_model#peft.PeftModel"),
            ("peft.LoraConfig", "py:class", "package_reference/lora#peft.LoraConfig"),
        ],
    ),
    "numpy": (
        "2",
        [
            ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
            (
                "numpy.random.Generator",
                "py:class",
                "reference/random/generator.html#numpy.random.Generator",
            ),
            (
                "numpy.quantile",
                "py:function",
                "reference/generated/numpy.quantile.html#numpy.quantile",
            ),
        ],
    ),
    "python": (
        "3",
        [
            ("contextlib.contextmanager", "py:function", "library/contextlib.html#$"),
            ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
            ("pathlib.Path", "py:class", "library/pathlib.html#$"),
            ("ValueError", "py:exception", "library/exceptions.html#$"),
            ("TypeError", "py:exception", "library/exceptions.html#$"),
            ("RuntimeError", "py:exception", "library/exceptions.html#$"),
            ("UserWarning", "py:exception", "library/exceptions.html#$"),
        ],
    ),
}


def write(project: str, version: str, entries: list[tuple[str, str, str]]) -> None:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in entries)
    (HERE / f"{project}.inv").write_bytes(header.encode() + zlib.compress(body.encode()))


if __name__ == "__main__":
    for project, (version, entries) in ENTRIES.items():
        write(project, version, entries)

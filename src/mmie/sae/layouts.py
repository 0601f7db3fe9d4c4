"""The names of the SAE checkpoint layouts :meth:`mmie.SparseAutoencoder.load` reads.

Kept apart from :mod:`mmie.sae.formats` (the readers) so that configuration code can
validate a layout name without importing torch.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["LAYOUTS", "Layout", "LayoutChoice"]

Layout = Literal[
    "mmie",
    "saelens",
    "gemma_scope",
    "gemma_scope_2",
    "llama_scope",
    "llama_scope_r1",
    "sparsify",
    "dictionary_learning",
    "qwen_scope",
    "openai_topk",
]
#: Every layout name, in the order the sniffer tries them (``"openai_topk"`` is recognised
#: only to be refused with its reason).
LAYOUTS: tuple[str, ...] = get_args(Layout)

#: A layout name or ``"auto"`` (detect it from the files present).
LayoutChoice = Literal["auto", Layout]

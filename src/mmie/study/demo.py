"""The bundled demo model: a tiny Llama-style causal LM shipped inside the package.

``scripts/train_demo_model.py`` trains it deterministically on the bundled text sets
(Hindi and English training splits in full, plus a little Hinglish, romanised Hindi, Urdu,
Punjabi and Bengali): 4 blocks, ``d_model`` 64, 4 heads, tied embeddings, a 1024-entry
byte-level BPE tokenizer with ``<pad>``/``<s>``/``</s>`` and left padding; about 0.28M
parameters (1.1 MB of fp32 safetensors). It continues Hindi prompts in Devanagari and
English prompts in English, which is enough for ``mmie demo`` to show an unlearning effect
on a laptop CPU. It is a test fixture for the pipeline, not a language model anyone should
use for anything else.

Example:
    >>> from mmie.study.demo import load_demo_model
    >>> model, tokenizer = load_demo_model()
    >>> model.config.num_hidden_layers, tokenizer.padding_side
    (4, 'left')
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mmie.models.loading import load_causal_lm

__all__ = ["DEMO_MODEL_FILES", "demo_model_path", "load_demo_model"]

logger = logging.getLogger(__name__)

DEMO_MODEL_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
"""Files the demo model directory must contain."""


def demo_model_path() -> Path:
    """Directory of the bundled demo model (``mmie/data/demo_model``).

    Returns:
        The directory, loadable with ``from_pretrained`` or :func:`mmie.load_causal_lm`.

    Raises:
        FileNotFoundError: a file of the model is missing (a broken install, or a source
            checkout without the weights: run ``python3 scripts/train_demo_model.py``).
    """
    path = Path(str(resources.files("mmie") / "data" / "demo_model"))
    missing = [name for name in DEMO_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the demo model in {path} is missing {missing}; reinstall mmie or recreate it "
            "with `python3 scripts/train_demo_model.py`"
        )
    return path


def load_demo_model(
    *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the bundled demo model and its tokenizer (no network access).

    Args:
        dtype: parameter dtype (the weights are stored in fp32).
        device: device to put the model on.

    Returns:
        ``(model, tokenizer)``: the model in eval mode, the tokenizer with left padding and
        ``pad_token`` set (see :func:`mmie.load_causal_lm`).

    Raises:
        TypeError: ``dtype`` is not a ``torch.dtype``.
        FileNotFoundError: the model files are missing (see :func:`demo_model_path`).
    """

    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    return load_causal_lm(demo_model_path(), dtype=dtype, device=device, padding_side="left")

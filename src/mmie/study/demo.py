"""The bundled demo models: three tiny Llama-style causal LMs shipped inside the package.

``scripts/train_demo_model.py`` trains them deterministically, by one recipe (same tokenizer,
seeds, optimiser and steps), on different selections of the bundled text sets:

* ``"base"`` (``mmie/data/demo_model``): Devanagari Hindi and English training lines, plus
  some romanised Hindi, Urdu, Punjabi and Bengali and code-mixed lines (the first words of a
  Hinglish line, then a Devanagari Hindi line). It continues Hindi prompts in Devanagari and
  English prompts in English, which is enough for ``mmie demo`` to show an unlearning effect
  on a laptop CPU, and switches to Devanagari after a few words of a Hinglish prompt.
* ``"retrain"`` (``mmie/data/demo_retrain``): the base selection minus the demo's forget
  texts (the first 64 lines of ``hindi_train``), the "retrained without the forget data"
  reference of TOFU and MUSE.
* ``"oracle"`` (``mmie/data/demo_oracle``): the base selection minus every Hindi text in any
  form (Devanagari, Hinglish, romanised), a model that never saw Hindi.

No model is trained on an evaluation line: ``hindi_eval``, ``english_eval`` and
``adversarial`` are never trained on, nor are the first 48 lines of each auxiliary set (64
for ``hindi_romanized``, whose line *i* transliterates ``hindi_train`` line *i*), nor the
last 32 lines of ``hindi_train``, a relearning split the demo never uses
(:func:`demo_relearn_texts`). Each model directory records the exact line ranges it was
trained on in ``training_info.json`` (:func:`demo_training_info`,
:func:`demo_training_texts`).

All three have 4 blocks, ``d_model`` 64, 4 heads, tied embeddings and the same 1024-entry
byte-level BPE tokenizer with ``<pad>``/``<s>``/``</s>`` and left padding (trained once, on
the base model's training texts, so teacher-forced metrics are comparable across them);
about 0.28M parameters (1.1 MB of fp32 safetensors) each. They are test fixtures for the
pipeline, not language models anyone should use for anything else.

Example:
    >>> from mmie.study.demo import load_demo_model
    >>> model, tokenizer = load_demo_model()
    >>> model.config.num_hidden_layers, tokenizer.padding_side
    (4, 'left')
    >>> oracle, _ = load_demo_model("oracle")
    >>> oracle.config.vocab_size == model.config.vocab_size
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mmie._validation import choice
from mmie.errors import DataError
from mmie.models.loading import load_causal_lm
from mmie.study.datasets import load_texts

__all__ = [
    "DEMO_MODELS",
    "DEMO_MODEL_FILES",
    "DemoModel",
    "demo_model_path",
    "demo_relearn_texts",
    "demo_training_info",
    "demo_training_texts",
    "load_demo_model",
]

logger = logging.getLogger(__name__)

DemoModel = Literal["base", "retrain", "oracle"]
"""Name of a bundled demo model."""

DEMO_MODELS: tuple[DemoModel, ...] = ("base", "retrain", "oracle")
"""Names of the bundled demo models (see the module docstring)."""

_DIRECTORIES: dict[str, str] = {
    "base": "demo_model",
    "retrain": "demo_retrain",
    "oracle": "demo_oracle",
}

DEMO_MODEL_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_info.json",
)
"""Files every demo model directory must contain."""


def demo_model_path(which: DemoModel = "base") -> Path:
    """Directory of a bundled demo model (``mmie/data/demo_model`` for the base model).

    Args:
        which: ``"base"``, ``"retrain"`` or ``"oracle"`` (see :data:`DEMO_MODELS`).

    Returns:
        The directory, loadable with ``from_pretrained`` or :func:`mmie.load_causal_lm`.

    Raises:
        ValueError: ``which`` is not one of :data:`DEMO_MODELS`.
        FileNotFoundError: a file of the model is missing (a broken install, or a source
            checkout without the weights: run ``python3 scripts/train_demo_model.py``).
    """
    which = choice(which, "which", DEMO_MODELS)
    path = Path(str(resources.files("mmie") / "data" / _DIRECTORIES[which]))
    missing = [name for name in DEMO_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the {which} demo model in {path} is missing {missing}; reinstall mmie or "
            f"recreate it with `python3 scripts/train_demo_model.py --only {which}`"
        )
    return path


def load_demo_model(
    which: DemoModel = "base",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a bundled demo model and its tokenizer (no network access).

    Args:
        which: ``"base"`` (the model the demo study unlearns), ``"retrain"`` (trained
            without the forget texts) or ``"oracle"`` (trained without any Hindi).
        dtype: parameter dtype (the weights are stored in fp32).
        device: device to put the model on.

    Returns:
        ``(model, tokenizer)``: the model in eval mode, the tokenizer with left padding and
        ``pad_token`` set (see :func:`mmie.load_causal_lm`). The three models share one
        tokenizer.

    Raises:
        ValueError: ``which`` is not one of :data:`DEMO_MODELS`.
        TypeError: ``dtype`` is not a ``torch.dtype``.
        FileNotFoundError: the model files are missing (see :func:`demo_model_path`).
    """
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    path = demo_model_path(which)
    return load_causal_lm(path, dtype=dtype, device=device, padding_side="left")


def demo_training_info(which: DemoModel = "base") -> dict[str, Any]:
    """The ``training_info.json`` of a bundled demo model.

    It records the recipe (seed, steps, batch size, learning rate, ...), the shared
    tokenizer's sha256, the lines the model was trained on (``training_texts.parts``), their
    count and sha256, the held-out splits (``held_out.evaluation``, ``held_out.relearn``),
    the forget split and the final training loss. A part is either a line range
    ``{"set", "start", "stop"}`` of a bundled set (``[start, stop)``), or code-mixed lines
    ``{"join": [range_a, range_b], "separator", "first_words_divisor", "first_words_min"}``:
    line *i* is the first ``max(first_words_min, n // first_words_divisor)`` of the ``n``
    words of line *i* of ``range_a``, ``separator``, then line *i* of ``range_b``.

    Args:
        which: ``"base"``, ``"retrain"`` or ``"oracle"``.

    Returns:
        The parsed JSON object.

    Raises:
        ValueError: ``which`` is not one of :data:`DEMO_MODELS`.
        FileNotFoundError: the model files are missing (see :func:`demo_model_path`).
    """
    path = demo_model_path(which) / "training_info.json"
    info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return info


def _part_texts(part: Mapping[str, Any]) -> list[str]:
    if "join" in part:
        first, second = (_part_texts(p) for p in part["join"])
        if len(first) != len(second):
            raise DataError(f"joined ranges of unequal length in {part}")
        divisor, minimum = int(part["first_words_divisor"]), int(part["first_words_min"])
        heads = [" ".join(t.split()[: max(minimum, len(t.split()) // divisor)]) for t in first]
        return [str(part["separator"]).join(pair) for pair in zip(heads, second)]
    texts = load_texts(part["set"])
    start, stop = int(part["start"]), int(part["stop"])
    if not 0 <= start <= stop <= len(texts):
        raise DataError(f"range {part} is outside {part['set']} ({len(texts)} lines)")
    return texts[start:stop]


def _sha256(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(texts)).encode("utf-8")).hexdigest()


def demo_training_texts(which: DemoModel = "base") -> list[str]:
    """The texts a bundled demo model was trained on, rebuilt from its training info.

    The line ranges of :func:`demo_training_info` are read from the bundled sets and the
    result is checked against the recorded count and sha256 (of the UTF-8 of the sorted
    texts joined by newlines), so it is exactly the training data.

    Args:
        which: ``"base"``, ``"retrain"`` or ``"oracle"``.

    Returns:
        The training texts, in the order of the recorded parts.

    Raises:
        ValueError: ``which`` is not one of :data:`DEMO_MODELS`.
        FileNotFoundError: the model files are missing (see :func:`demo_model_path`).
        DataError: the rebuilt texts do not match the recorded count or sha256 (the bundled
            sets changed since the model was trained).

    Example:
        >>> from mmie.study.datasets import load_texts
        >>> held_out = set(load_texts("hindi_eval"))
        >>> any(text in held_out for text in demo_training_texts("base"))
        False
    """
    record = demo_training_info(which)["training_texts"]
    texts = [text for part in record["parts"] for text in _part_texts(part)]
    if len(texts) != record["n_texts"] or _sha256(texts) != record["sha256"]:
        raise DataError(
            f"the training texts of the {which} demo model rebuilt from its training_info.json "
            f"({len(texts)} texts) do not match the recorded {record['n_texts']} texts and "
            "sha256; the bundled sets changed since it was trained "
            "(rerun `python3 scripts/train_demo_model.py`)"
        )
    return texts


def demo_relearn_texts() -> list[str]:
    """The held-out relearning split: ``hindi_train`` lines no demo model was trained on.

    They are the last lines of ``hindi_train`` (the range is recorded in each model's
    training info under ``held_out.relearn``); the demo study never uses them as forget or
    retain texts, so a relearning attack can fine-tune an unlearned model on them and
    measure how much of the forget set comes back.

    Returns:
        The Devanagari Hindi texts of the split, in file order.

    Raises:
        FileNotFoundError: the base model's files are missing (see :func:`demo_model_path`).
    """
    return _part_texts(demo_training_info("base")["held_out"]["relearn"])

"""Tiny models and tokenizers for tests, examples and downstream test suites.

Nothing here downloads anything: the tokenizer is a byte-level BPE with no merges (every
UTF-8 byte is a token) and the models are randomly initialised from small configs of the
architectures mmie supports.

Example:
    >>> from mmie.testing import byte_tokenizer, tiny_causal_lm
    >>> tok = byte_tokenizer()
    >>> model = tiny_causal_lm("llama", vocab_size=len(tok), seed=0)
    >>> model.config.hidden_size
    32
"""

from __future__ import annotations

import gc
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = ["ARCHITECTURES", "byte_tokenizer", "count_live_models", "tiny_causal_lm"]

Architecture = Literal["llama", "qwen2", "mistral", "gemma", "gemma2", "gpt2", "gpt_neox", "phi"]
ARCHITECTURES: tuple[str, ...] = (
    "llama",
    "qwen2",
    "mistral",
    "gemma",
    "gemma2",
    "gpt2",
    "gpt_neox",
    "phi",
)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def byte_tokenizer(*, padding_side: Literal["left", "right"] = "left") -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with 256 byte tokens plus ``<pad>``, ``<s>`` and ``</s>``.

    Byte tokens get ids 0-255 in the GPT-2 byte-to-unicode order; the special tokens get ids
    256 (pad), 257 (bos) and 258 (eos). Any text round-trips exactly.

    Args:
        padding_side: side on which batches are padded (left suits generation).

    Returns:
        A fast tokenizer with ``pad_token``, ``bos_token`` and ``eos_token`` set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_order = sorted(alphabet, key=_byte_value)
    vocab = {ch: i for i, ch in enumerate(byte_order)}
    for special in (PAD, BOS, EOS):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([PAD, BOS, EOS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        padding_side=padding_side,
        model_max_length=2048,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids (transformers 4)
    )
    return tok


def _byte_value(ch: str) -> int:
    # Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256+.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    code = ord(ch)
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]


def tiny_causal_lm(
    arch: str = "llama",
    *,
    vocab_size: int = 259,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> PreTrainedModel:
    """A randomly initialised causal LM of a supported architecture, small enough for tests.

    Args:
        arch: one of ``ARCHITECTURES``.
        vocab_size: vocabulary size (259 matches :func:`byte_tokenizer`).
        hidden_size: ``d_model``.
        num_layers: number of transformer blocks.
        num_heads: attention heads (``hidden_size`` must be divisible by it).
        seed: seed of the weight initialisation (a local generator; global RNG untouched).
        dtype: parameter dtype.
        **overrides: extra config fields.

    Returns:
        The model in eval mode, with ``pad_token_id=256``, ``bos_token_id=257`` and
        ``eos_token_id=258`` in its config.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "pad_token_id": 256,
        "bos_token_id": 257,
        "eos_token_id": 258,
    }
    if arch == "gpt2":
        fields: dict[str, Any] = {
            "n_embd": hidden_size,
            "n_layer": num_layers,
            "n_head": num_heads,
            "n_positions": 512,
        }
    else:
        fields = {
            "hidden_size": hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "intermediate_size": 2 * hidden_size,
            "max_position_embeddings": 512,
        }
        if arch in ("llama", "qwen2", "mistral", "gemma", "gemma2"):
            fields["num_key_value_heads"] = max(1, num_heads // 2)
        if arch in ("gemma", "gemma2"):
            fields["head_dim"] = hidden_size // num_heads
    fields.update(common)
    fields.update(overrides)
    config = AutoConfig.for_model(arch, **fields)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    return model


def count_live_models() -> int:
    """Number of top-level ``PreTrainedModel`` instances alive in this process.

    A model nested in another (``LlamaModel`` inside ``LlamaForCausalLM``) is not counted
    separately. Used by lifecycle tests and the memory benchmark to prove that no second copy
    of the base model is ever created. Runs the garbage collector first.
    """
    gc.collect()
    models = [obj for obj in gc.get_objects() if issubclass(type(obj), PreTrainedModel)]
    nested: set[int] = set()
    for model in models:
        for sub in model.modules():
            if sub is not model and issubclass(type(sub), PreTrainedModel):
                nested.add(id(sub))
    return sum(1 for model in models if id(model) not in nested)

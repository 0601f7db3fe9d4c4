"""The logit lens: the target-script mass an intermediate block already predicts.

An arm that edits late blocks (or the output distribution) may leave the target language
fully present in the residual stream of earlier blocks. The logit lens (nostalgebraist 2020,
"interpreting GPT: the logit lens"; Belrose et al. 2023, "Eliciting latent predictions from
transformers with the tuned lens") reads each block output ``h_L`` at a prompt's last
position through the model's own final norm and unembedding, ``logits_L = W_U ·
norm(h_L)``, as if the network ended at block ``L``, and reports the probability mass of the
target script's tokens in ``softmax(logits_L)``. At the last block this *is* the model's
next-token distribution (the function is tested to reproduce :func:`mmie.script_mass` there).

Threat model: **activations**. Reading intermediate states needs access to the model's
activations (or weights), not only its outputs. The lens is read-only: it observes block
outputs through the one hook mechanism (:class:`~mmie.HookSet`; hooks removed in
``finally``), with every attached intervention active, so it reads the model as deployed.

Compare an arm with the oracle (a model that never learnt the target) under the same lens:
an arm whose early and middle blocks keep the base model's mass while only the last ones
drop it has hidden the language, not removed it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from mmie._validation import integer_sequence, positive_int, text_list
from mmie.errors import IncompatibleModelError
from mmie.language.unicode import script_code, script_token_mask
from mmie.models.blocks import get_block, input_device, num_layers, resolve_attribute, unwrap_model
from mmie.models.hooks import HookSet
from mmie.models.logprobs import right_padded_batches

__all__ = ["LogitLens", "final_norm", "logit_lens"]

logger = logging.getLogger(__name__)

# Attribute paths of the final norm (applied to the last block's output before the
# unembedding), tried in order on the unwrapped model.
_NORM_PATHS: tuple[str, ...] = (
    "model.norm",  # Llama, Qwen2/3, Mistral, Gemma, Gemma2/3, OLMo
    "model.final_layernorm",  # Phi, Phi-2
    "transformer.ln_f",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.final_layer_norm",  # GPT-NeoX, Pythia
    "model.decoder.final_layer_norm",  # OPT
    "transformer.norm_f",  # MPT
    "model.language_model.norm",  # multimodal wrappers (Gemma3, Llava-style)
)

# Config fields that rescale the logits after the unembedding in some architectures; the
# lens cannot reproduce the model's distribution without them, so it refuses.
_LOGIT_RESCALING = ("logit_scale", "logits_scaling", "output_multiplier_scale")


def final_norm(model: nn.Module, norm_path: str | None = None) -> nn.Module:
    """The final norm of ``model``: the module between the last block and the unembedding.

    Args:
        model: a Hugging Face causal LM, possibly wrapped by PEFT.
        norm_path: dotted attribute path of the norm on the unwrapped model, for
            architectures mmie does not know (e.g. ``"model.norm"``).

    Returns:
        The norm module (``model.norm`` for Llama/Qwen/Mistral/Gemma, ``transformer.ln_f``
        for GPT-2, ``gpt_neox.final_layer_norm`` for GPT-NeoX, ...).

    Raises:
        IncompatibleModelError: no final norm was found (the message lists the paths that
            were tried), or the architecture projects the normed state again before the
            unembedding (OPT's ``project_out``), which the lens would have to guess.
    """
    base = unwrap_model(model)
    paths = (norm_path,) if norm_path is not None else _NORM_PATHS
    for path in paths:
        found = resolve_attribute(base, path)
        if isinstance(found, nn.Module):
            break
    else:
        if norm_path is not None:
            raise IncompatibleModelError(
                f"norm_path={norm_path!r} does not name a module on {type(base).__name__}"
            )
        raise IncompatibleModelError(
            f"cannot locate the final norm of {type(base).__name__}; tried "
            f"{', '.join(_NORM_PATHS)}. The logit lens does not guess: pass "
            "norm_path='<dotted.path.to.norm>' explicitly"
        )
    decoder = resolve_attribute(base, "model.decoder")
    if getattr(decoder, "project_out", None) is not None:
        raise IncompatibleModelError(
            f"{type(base).__name__} projects the normed hidden state (project_out) before the "
            "unembedding; the logit lens does not support it"
        )
    return found


def _readout(model: nn.Module, norm_path: str | None) -> Callable[[Tensor], Tensor]:
    """``h [n, d_model] -> fp32 logits [n, vocab]`` through the model's norm and unembedding."""
    base = unwrap_model(model)
    norm = final_norm(model, norm_path)
    get_head = getattr(base, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        raise IncompatibleModelError(
            f"{type(base).__name__} has no output embedding (get_output_embeddings()); the "
            "logit lens needs the unembedding"
        )
    config = getattr(base, "config", None)
    for name in _LOGIT_RESCALING:
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise IncompatibleModelError(
                f"{type(base).__name__} rescales its logits ({name}={getattr(config, name)}); "
                "the logit lens does not support it"
            )
    cap = getattr(config, "final_logit_softcapping", None)
    norm_device = _device_of(norm)
    head_device = _device_of(head)

    def read(hidden: Tensor) -> Tensor:
        x = norm(hidden.to(norm_device) if norm_device is not None else hidden)
        logits = head(x.to(head_device) if head_device is not None else x).float()
        if cap:  # Gemma 2/3: logits ← cap · tanh(logits / cap), as their forward does
            logits = torch.tanh(logits / cap) * cap
        return logits

    return read


def _device_of(module: nn.Module) -> torch.device | None:
    for p in module.parameters():
        return p.device
    return None


class _StopForwardError(Exception):
    """Raised after the deepest requested block: later blocks and the head never run."""


@dataclass(frozen=True)
class LogitLens:
    """The target-script mass of the next-token distribution read at each block output.

    Attributes:
        layers: the blocks read, ascending.
        mass: per layer, the mean over prompts of ``Σ_{v ∈ S} softmax(W_U · norm(h_L))_v``
            at each prompt's last position (``S``: the script's tokens).
        values: per layer, the per-prompt masses (``[layer][prompt]``).
        script: the script's ISO 15924 code.
        n_prompts: number of prompts.
        n_target_tokens: vocabulary entries in the script mask.
        n_forward: model forward passes (stopped after the deepest requested block).
        seconds: wall-clock time.
    """

    layers: tuple[int, ...]
    mass: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]
    script: str
    n_prompts: int
    n_target_tokens: int
    n_forward: int
    seconds: float

    def at(self, layer: int) -> float:
        """The mean mass at block ``layer``.

        Raises:
            KeyError: ``layer`` was not read.
        """
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not read; read layers: {self.layers}")
        return self.mass[self.layers.index(layer)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """Draw the per-layer mass to an image file (format from the suffix).

        Args:
            path: where to write (``.png``, ``.pdf``, ``.svg``).
            title: the figure's title.

        Returns:
            The path written.

        Raises:
            ImportError: matplotlib is not installed (install the ``mmie[plot]`` extra).
        """
        try:  # matplotlib is an optional dependency (the plot extra)
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                "LogitLens.plot needs matplotlib: install the plot extra with "
                "`python3 -m pip install 'mmie[plot]'`"
            ) from exc
        fig = Figure(figsize=(5.0, 3.2))
        ax = fig.add_subplot()
        ax.plot(self.layers, self.mass, marker="o")
        ax.set_xlabel("block")
        ax.set_ylabel(f"mass on {self.script} tokens")
        ax.set_ylim(bottom=0.0)
        ax.set_xticks(list(self.layers))
        if title:
            ax.set_title(title)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out)
        return out


@torch.no_grad()
def logit_lens(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    script: str,
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int | None = 1024,
    block_path: str | None = None,
    norm_path: str | None = None,
) -> LogitLens:
    """Read the target-script mass of the next-token distribution at every block output.

    For each prompt, the output ``h_L`` of block ``L`` at the prompt's last token is mapped
    through the model's final norm and its unembedding (``get_output_embeddings()``, bias
    included; Gemma's final logit soft-capping applied), and the mass on the script's
    tokens is ``exp(logsumexp(logits[S]) − logsumexp(logits))`` in fp32, the rule of
    :func:`mmie.script_mass` with ``mode="next_token"``; at the last block the two agree.
    The token-level mask comes from :func:`mmie.script_token_mask`: with a byte-level
    tokenizer that splits every character of the script into bytes the mask is empty and a
    ``ValueError`` says so (the byte-aware next-character variant is not offered here).

    Attached interventions stay active (the lens reads the model as deployed); the forward
    pass stops after the deepest requested block. Nothing on the model changes.

    Threat model: activations (white-box access to hidden states).

    Args:
        model: a causal LM (PEFT-wrapped models work) in eval mode.
        tokenizer: its tokenizer (with a pad token).
        prompts: the prompts; the lens reads the position after each.
        script: the target script: a code (``"Deva"``), a name or a language label
            (``"hi"``).
        layers: blocks to read (default: every block).
        batch_size: prompts per forward pass.
        max_length: longer prompts are truncated (with a warning).
        block_path: dotted path of the block list for unknown architectures.
        norm_path: dotted path of the final norm on the unwrapped model, for architectures
            mmie does not know (``model.norm``, ``model.final_layernorm``,
            ``transformer.ln_f``, ``gpt_neox.final_layer_norm``,
            ``model.decoder.final_layer_norm``, ``transformer.norm_f`` and
            ``model.language_model.norm`` are tried otherwise).

    Returns:
        A :class:`LogitLens` with one mass per layer.

    Raises:
        IncompatibleModelError: the final norm or the unembedding cannot be found, or the
            architecture transforms the logits in a way the lens does not reproduce.
        ValueError: empty prompts, a layer out of range, an unknown script, or a script
            mask that selects no token.

    Example:
        >>> from mmie.testing import byte_tokenizer, tiny_causal_lm
        >>> lens = logit_lens(tiny_causal_lm("llama"), byte_tokenizer(), ["hello wor"], "Latn")
        >>> lens.layers, len(lens.mass)  # one value per block
        ((0, 1), 2)

        On the demo models (four blocks), for an arm and the never-Hindi oracle:

        >>> mmie.logit_lens(arm_model, tok, prompts, "hi").mass  # doctest: +SKIP
        (0.958, 0.922, 0.877, 0.704)
        >>> mmie.logit_lens(oracle, tok, prompts, "hi").mass  # doctest: +SKIP
        (0.408, 0.403, 0.375, 0.036)
    """
    start = time.perf_counter()
    texts = text_list(prompts, "prompts")
    batch_size = positive_int(batch_size, "batch_size")
    code = script_code(script)
    n_blocks = num_layers(model, block_path)
    if layers is None:
        wanted = list(range(n_blocks))
    else:
        wanted = sorted(set(integer_sequence(layers, "layers", minimum=0, maximum=n_blocks - 1)))
        if not wanted:
            raise ValueError("layers must not be empty (None reads every block)")
    read = _readout(model, norm_path)
    mask = script_token_mask(tokenizer, code)
    token_ids = mask.nonzero().flatten()
    if token_ids.numel() == 0:
        raise ValueError(
            f"the {code} token mask of this tokenizer selects no token (a byte-level "
            "vocabulary splits every character of the script into bytes); the token-level "
            "logit lens cannot read it"
        )
    deepest = wanted[-1]
    values: dict[int, list[float]] = {layer: [0.0] * len(texts) for layer in wanted}
    last: Tensor | None = None  # (batch,) last real position of each row of the batch
    captured: dict[int, Tensor] = {}

    def recorder(layer: int) -> Callable[[Tensor], None]:
        def observe(hidden: Tensor) -> None:
            assert last is not None
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            captured[layer] = hidden[rows, last.to(hidden.device)]  # (batch, d_model)
            if layer == deepest:
                raise _StopForwardError

        return observe

    hooks = HookSet("logit_lens")
    n_forward = 0
    try:
        for layer in wanted:
            hooks.add_observer(get_block(model, layer, block_path), recorder(layer))
        for idx, enc in right_padded_batches(
            tokenizer,
            texts,
            batch_size=batch_size,
            max_length=max_length,
            device=input_device(model),
        ):
            last = enc["attention_mask"].sum(1) - 1
            captured.clear()
            with contextlib.suppress(_StopForwardError):
                model(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    use_cache=False,
                )
            n_forward += 1
            for layer in wanted:
                logits = read(captured[layer])  # (batch, vocab) fp32
                ids = token_ids[token_ids < logits.shape[-1]].to(logits.device)
                log_mass = torch.logsumexp(logits.index_select(-1, ids), -1) - torch.logsumexp(
                    logits, -1
                )
                for i, v in zip(idx, log_mass.exp().tolist()):
                    values[layer][i] = float(v)
    finally:
        hooks.remove()
        captured.clear()
    means = tuple(math.fsum(values[layer]) / len(texts) for layer in wanted)
    seconds = time.perf_counter() - start
    logger.info(
        "logit_lens: %d prompts, %d layers in %.2f s (%d forward passes)",
        len(texts),
        len(wanted),
        seconds,
        n_forward,
    )
    return LogitLens(
        layers=tuple(wanted),
        mass=means,
        values=tuple(tuple(values[layer]) for layer in wanted),
        script=code,
        n_prompts=len(texts),
        n_target_tokens=int(token_ids.numel()),
        n_forward=n_forward,
        seconds=seconds,
    )

"""Build, train and release the arms of a study on the single base model.

:class:`Study` holds what every (seed, arm) shares: the base model and tokenizer (one copy,
never duplicated), the text sets, the selected layers, the base model's token activations at
those layers (collected once) and the per-seed SAEs. :meth:`Study.arm` is a context manager
that builds one arm on the base model, trains what needs training and yields an
:class:`ArmState` to evaluate; on exit (also when the body raises) it removes hooks and
unloads adapters, and checks that the base model is clean again.

Parts of an arm apply in a fixed order: the trained part (LoRA adapter or ReFT hooks), then
the LEACE scrubber (fitted on the model *with* the trained part, so it sees the
representation it will edit), then the SAE gate. SAEs and their features come from the base
model's activations (per seed), whatever else the arm contains.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._io import atomic_write_json
from mmie.edits.dynamic_gating import DynamicGatingProcessor
from mmie.edits.reft import LoReFTConfig
from mmie.edits.sae_gate import SAEGate
from mmie.edits.scrubber import fit_scrubber
from mmie.errors import InterventionError
from mmie.language.detectors import EnsembleDetector
from mmie.models.activations import collect_activations
from mmie.models.hooks import mmie_hooks
from mmie.sae.features import contrast_features, script_invariant_features, threshold_features
from mmie.sae.model import SparseAutoencoder
from mmie.sae.training import train_sae
from mmie.study.config import ArmConfig, ExperimentConfig
from mmie.study.suite import EvalSets
from mmie.unlearning.config import ReFTUnlearnResult, UnlearnConfig, UnlearnResult
from mmie.unlearning.lifecycle import lora_arm, reft_arm

__all__ = ["ArmState", "Study"]

logger = logging.getLogger(__name__)

_QUALITY_FILE = "training_quality.json"  # SAE quality at training time, next to its weights


@dataclass
class ArmState:
    """An arm, built and trained, ready to evaluate.

    Attributes:
        model: the model to evaluate (a ``PeftModel`` for LoRA arms, else the base model with
            hooks attached).
        logits_processors: processors to pass to generation (dynamic gating).
        info: JSON-ready facts about the arm (features, training losses, eraser ranks).
    """

    model: nn.Module
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _training_info(result: UnlearnResult | ReFTUnlearnResult) -> dict[str, Any]:
    history = list(result.history)
    return {
        "steps_run": len(history),
        "first_loss": history[0].loss if history else None,
        "last_loss": history[-1].loss if history else None,
        "early_stopped": bool(result.early_stopped),
    }


def _gibberish(texts: list[str], seed: int) -> list[str]:
    """Script-only gibberish: each text's characters shuffled within the text (seeded)."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        chars = [c for c in text if not c.isspace()]
        rng.shuffle(chars)
        words = ["".join(chars[i : i + 5]) for i in range(0, len(chars), 5)]
        out.append(" ".join(words))
    return out


class Study:
    """Shared state of a study: one base model, its text sets, layers and per-seed SAEs.

    Args:
        model: the base model (never copied; arms are built on it and removed again).
        tokenizer: its tokenizer.
        config: the study config.
        sets: the text and prompt sets.
        layers: the selected layers.
        artifacts: directory for per-seed artifacts (SAEs), or ``None`` to keep nothing.
        show_progress: progress bars for training.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        config: ExperimentConfig,
        sets: EvalSets,
        layers: tuple[int, ...],
        *,
        artifacts: Path | None = None,
        show_progress: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.sets = sets
        self.layers = layers
        self.artifacts = artifacts
        self.show_progress = show_progress
        self._tokens: dict[str, dict[int, Tensor]] | None = None
        self._saes: dict[int, dict[int, SparseAutoencoder]] = {}  # seed -> layer -> SAE
        self._sae_info: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ shared caches
    def _token_activations(self) -> dict[str, dict[int, Tensor]]:
        """Base-model token activations at the selected layers (collected once)."""
        if self._tokens is None:
            d = self.config.data
            groups = {"forget": self.sets.forget_train, "retain": self.sets.retain_train}
            if self.config.sae.picker == "script_invariant":
                groups["romanized"] = self.sets.romanized_texts
                groups["gibberish"] = _gibberish(self.sets.forget_train, seed=0)
            self._tokens = {}
            for name, texts in groups.items():
                acts = collect_activations(
                    self.model,
                    self.tokenizer,
                    texts,
                    self.layers,
                    batch_size=d.batch_size,
                    max_length=d.max_length,
                    desc=f"activations ({name})",
                )
                self._tokens[name] = dict(acts.tokens)
        return self._tokens

    def saes(
        self, seed: int
    ) -> tuple[dict[int, SparseAutoencoder], dict[int, tuple[int, ...]], dict[str, Any]]:
        """The seed's SAEs (trained on base activations, or loaded from the artifacts) and
        the features to gate.

        Returns:
            ``(layer -> SAE, layer -> feature indices, info)``.

        Raises:
            InterventionError: the picker selected no feature at a layer.
        """
        tokens = self._token_activations()
        if seed not in self._saes:
            saes: dict[int, SparseAutoencoder] = {}
            quality: dict[str, Any] = {}
            for layer in self.layers:
                saes[layer], quality[str(layer)] = self._sae(seed, layer, tokens)
            self._saes[seed] = saes
            self._sae_info[seed] = quality
        saes = self._saes[seed]
        features = {layer: self._features(sae, layer, seed, tokens) for layer, sae in saes.items()}
        info = {
            "sae_quality": self._sae_info.get(seed, {}),
            "features": {str(k): list(v) for k, v in features.items()},
        }
        return saes, features, info

    def _sae(
        self, seed: int, layer: int, tokens: dict[str, dict[int, Tensor]]
    ) -> tuple[SparseAutoencoder, dict[str, Any]]:
        """The seed's SAE at ``layer``: loaded from the artifacts, or trained and saved."""
        cfg = self.config.sae
        where = (
            self.artifacts / f"seed{seed}" / "sae" / f"layer{layer}"
            if self.artifacts is not None
            else None
        )
        if where is not None and (where / _QUALITY_FILE).is_file():
            # Written last, so its presence means the SAE was saved completely.
            sae = SparseAutoencoder.load(where)
            logger.info("seed %d: loaded the layer-%d SAE from %s", seed, layer, where)
            return sae, json.loads((where / _QUALITY_FILE).read_text())
        acts = torch.cat([tokens["forget"][layer], tokens["retain"][layer]])
        sae, stats = train_sae(
            acts,
            architecture=cfg.architecture,
            d_sae=cfg.d_sae_multiple * acts.shape[1],
            k=cfg.k if cfg.architecture == "topk" else None,
            l1_coefficient=cfg.l1_coefficient,
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=seed,
            hook_layer=layer,
            hook_name=f"blocks.{layer}.hook_resid_post",
            show_progress=self.show_progress,
        )
        quality = {
            "fvu": stats.final_fvu,
            "l0": stats.final_l0,
            "dead_fraction": stats.dead_fraction,
        }
        if where is not None:
            sae.save(where)
            atomic_write_json(where / _QUALITY_FILE, quality)
        return sae, quality

    def _features(
        self, sae: SparseAutoencoder, layer: int, seed: int, tokens: dict[str, dict[int, Tensor]]
    ) -> tuple[int, ...]:
        """The latents of ``sae`` the configured picker gates at ``layer``."""
        cfg = self.config.sae
        forget, retain = tokens["forget"][layer], tokens["retain"][layer]
        if cfg.picker == "contrast":
            picked = contrast_features(
                sae,
                forget,
                retain,
                top_k=cfg.n_features,
                max_retain_frequency=cfg.max_retain_frequency,
            )
        elif cfg.picker == "threshold":
            picked = threshold_features(sae, forget, retain, top_k=cfg.n_features)
        else:
            picked = script_invariant_features(
                sae,
                forget,
                tokens["romanized"][layer],
                tokens["gibberish"][layer],
                retain=retain,
                top_k=cfg.n_features,
                max_retain_frequency=cfg.max_retain_frequency,
            )
        if not picked.indices:
            raise InterventionError(
                f"the {cfg.picker!r} picker selected no SAE feature at layer {layer} for "
                f"seed {seed}; relax sae.max_retain_frequency or train the SAE longer"
            )
        return tuple(picked.indices)

    def release_seed(self, seed: int) -> None:
        """Drop the seed's in-memory SAEs (they stay on disk under the artifacts)."""
        self._saes.pop(seed, None)

    # ------------------------------------------------------------------ arms
    def _unlearn_config(self, arm: ArmConfig, seed: int) -> UnlearnConfig:
        return UnlearnConfig(
            objective=arm.objective,
            steps=arm.steps,
            lr=arm.lr,
            batch_size=arm.batch_size,
            max_length=self.config.data.max_length,
            kl_weight=arm.kl_weight,
            beta=arm.beta,
            seed=seed,
        )

    @contextlib.contextmanager
    def _trained(self, arm: ArmConfig, seed: int, layers: tuple[int, ...]) -> Iterator[ArmState]:
        part = arm.trained_part
        if part is None:
            yield ArmState(model=self.model)
            return
        sets = self.sets
        if part == "lora":
            with lora_arm(
                self.model,
                self.tokenizer,
                sets.forget_train,
                sets.retain_train,
                config=self._unlearn_config(arm, seed),
                rank=arm.rank,
                show_progress=self.show_progress,
            ) as result:
                yield ArmState(model=result.model, info={"training": _training_info(result)})
        else:
            with reft_arm(
                self.model,
                self.tokenizer,
                sets.forget_train,
                sets.retain_train,
                reft_config=LoReFTConfig(layers=layers, rank=arm.rank, seed=seed),
                config=self._unlearn_config(arm, seed),
                show_progress=self.show_progress,
            ) as result:
                yield ArmState(model=self.model, info={"training": _training_info(result)})

    @contextlib.contextmanager
    def arm(self, arm: ArmConfig, seed: int) -> Iterator[ArmState]:
        """Build ``arm`` for ``seed`` on the base model, yield it, then release it.

        Raises:
            InterventionError: the base model still carries hooks or an adapter after the
                arm was released (later arms would be contaminated).
        """
        layers = arm.layers or self.layers
        try:
            with contextlib.ExitStack() as stack:
                state = stack.enter_context(self._trained(arm, seed, layers))
                model = state.model
                model.eval()
                if arm.scrubs:
                    scrubber = fit_scrubber(
                        model,
                        self.tokenizer,
                        {"retain": self.sets.retain_train, "forget": self.sets.forget_train},
                        layers,
                        method=arm.scrub_method,
                        center="retain" if arm.scrub_center == "retain" else None,
                        batch_size=self.config.data.batch_size,
                        max_length=self.config.data.max_length,
                    )
                    stack.enter_context(scrubber)
                    state.info["scrubber_ranks"] = {
                        str(k): e.rank for k, e in scrubber.erasers.items()
                    }
                if arm.gate_part is not None:
                    saes, features, info = self.saes(seed)
                    if arm.layers:
                        missing = [layer for layer in arm.layers if layer not in saes]
                        if missing:
                            raise InterventionError(
                                f"arm {arm.name!r} gates layers {missing} that have no SAE; "
                                f"SAEs exist for the selected layers {list(saes)}"
                            )
                        features = {k: v for k, v in features.items() if k in arm.layers}
                    state.info.update(info)
                    if arm.gate_part == "sae_gate":
                        gate = SAEGate(model, saes, features, alpha=arm.alpha)
                        stack.enter_context(gate)
                    else:
                        gate = SAEGate(model, saes, features, alpha=arm.base_alpha)
                        stack.enter_context(gate)
                        state.logits_processors.append(
                            DynamicGatingProcessor(
                                gate,
                                self.tokenizer,
                                target_script=self.config.target,
                                base_alpha=arm.base_alpha,
                                high_alpha=arm.alpha,
                                penalty=arm.penalty or None,
                                detector=EnsembleDetector(),
                                target_language=self.config.target,
                                detect_every=4,
                            )
                        )
                yield state
        finally:
            self._check_clean()

    def _check_clean(self) -> None:
        left = mmie_hooks(self.model)
        if left:
            raise InterventionError(
                f"the base model still carries mmie hooks after releasing an arm: {left}"
            )
        if any(type(m).__module__.startswith("peft") for m in self.model.modules()):
            raise InterventionError("the base model still carries a PEFT adapter after release")
        self.model.eval()

"""Build, train and release the arms of a study on the single base model.

:class:`Study` holds what every (seed, arm) shares: the base model and tokenizer (one copy,
never duplicated), the text sets, the selected layers, and the ingredients arms are built
from. :meth:`Study.arm` is a context manager that builds one arm on the base model, trains
what needs training and yields an :class:`ArmState` to evaluate; on exit (also when the
body raises) it removes hooks and unloads adapters, and checks that the base model is clean
again.

**Order independence.** Everything an arm is built from -- the token activations its SAEs
are trained on and its features are picked from, the SAEs themselves, the LEACE scrubber --
comes from the *clean* base model: :meth:`Study.arm` resolves them before it trains or
attaches anything, and :meth:`Study.token_activations` refuses to run on a model that
carries an adapter or a hook. SAEs (with their features) and scrubbers are cached under the
output directory's artifacts and reused by later runs, resumed runs and separate
``--arm`` jobs, so one (seed, arm) unit gives the same result whatever ran before it. Each
cached artefact is computed under an inter-process lock next to it (two runs needing the
same SAE train it once), and a cached artefact that cannot be read (truncated, corrupt,
non-finite) is logged, naming its directory, and computed again.

Parts of an arm apply in a fixed order: the trained part (LoRA adapter or ReFT hooks), then
the scrubber, then the SAE gate. Control arms (``control.identity``, ``control.script_ban``,
``control.eos``, ``control.noise``) need no training: they exist to show that the gates
reject what cannot be unlearning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmie._io import atomic_write_json, file_lock, read_safetensors, strict_json_loads
from mmie.edits.controls import ForcedEOSProcessor, NoiseIntervention, ScriptBanProcessor
from mmie.edits.dynamic_gating import DynamicGatingProcessor
from mmie.edits.reft import LoReFTConfig, ReFTAdapter
from mmie.edits.sae_gate import SAEGate
from mmie.edits.scrubber import Scrubber, fit_scrubber
from mmie.errors import CheckpointError, InterventionError
from mmie.language.detectors import make_detector
from mmie.models.activations import collect_activations
from mmie.models.hooks import BlockIntervention, detached, mmie_hooks
from mmie.sae.features import contrast_features, script_invariant_features, threshold_features
from mmie.sae.model import SparseAutoencoder
from mmie.sae.quality import check_reconstruction
from mmie.sae.training import train_sae
from mmie.study.config import ArmConfig, ExperimentConfig
from mmie.study.records import MetricRecord, Records
from mmie.study.suite import EvalSets
from mmie.unlearning.config import ReFTUnlearnResult, UnlearnConfig, UnlearnResult
from mmie.unlearning.lifecycle import lora_arm, reft_arm, restored_lora_arm
from mmie.unlearning.lora_checkpoint import save_lora

__all__ = ["ArmState", "Study"]

logger = logging.getLogger(__name__)

_QUALITY_FILE = "training_quality.json"  # SAE quality at training time, written last
_FEATURES_FILE = "features.json"  # the picked latents, next to the SAE's weights
_SCRUBBER_DONE = "fitted.json"  # written after the scrubber's files: marks a complete save
_TRAINING_FILE = "training.json"  # a trained adapter's training record, written after it
# What reading a cached artefact can raise when its files are broken (CheckpointError and
# DataError are ValueErrors; KeyError/TypeError: a JSON file of the wrong shape).
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)


def _artifact_lock(where: Path) -> contextlib.AbstractContextManager[None]:
    """The inter-process lock of the cached artefact in ``where`` (a file next to it)."""
    return file_lock(where.parent / f"{where.name}.lock", what=f"artefact {where}")


def _read_json_file(path: Path) -> Any:
    return strict_json_loads(path.read_bytes().decode("utf-8"))


def _forget(where: Path, marker: str, exc: BaseException) -> None:
    """Log that the artefact in ``where`` is unreadable and drop its completion marker, so
    that it is computed again (and a run killed meanwhile does not trust it)."""
    logger.warning("the cached artefact in %s is unreadable (%s); computing it again", where, exc)
    (where / marker).unlink(missing_ok=True)


@dataclass
class ArmState:
    """An arm, built and trained, ready to evaluate.

    Attributes:
        model: the model to evaluate (a ``PeftModel`` for LoRA arms, else the base model with
            hooks attached).
        logits_processors: processors to pass to generation (dynamic gating, controls).
        info: JSON-ready facts about the arm (features, training losses, eraser ranks).
        hooks: the interventions this arm attached (detached to compute the base model).
        adapter_off: for LoRA arms, ``model.disable_adapter``.
    """

    model: nn.Module
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    hooks: list[BlockIntervention] = field(default_factory=list)
    adapter_off: Callable[[], AbstractContextManager[Any]] | None = None

    @property
    def scores_as_base(self) -> bool:
        """Whether teacher-forced scoring of :attr:`model` is the clean base model's, bit for
        bit: no adapter, and every attached hook is an :class:`~mmie.SAEGate` at scalar
        alpha 0 with no per-sequence alpha (its edit then returns the hidden state itself).
        Logits processors act only in generation. True for ``control.identity``,
        ``control.script_ban``, ``control.eos``, ``dynamic_gate`` at ``base_alpha = 0`` and
        ``sae_gate`` at ``alpha = 0``: their teacher-forced records are the base model's."""
        if self.adapter_off is not None or any(
            type(m).__module__.startswith("peft") for m in self.model.modules()
        ):
            return False
        if not all(
            isinstance(h, SAEGate) and h.alpha == 0.0 and not h.sequence_alpha_set
            for h in self.hooks
        ):
            return False
        return {owner for _, owner in mmie_hooks(self.model)} <= {"SAEGate"}

    @property
    def generates_as_base(self) -> bool:
        """Whether generation gives the base model's outputs too (:attr:`scores_as_base` and
        no logits processor): every record of the arm is the base model's."""
        return self.scores_as_base and not self.logits_processors

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Inside the block :attr:`model` computes the clean base model (same weights)."""
        with contextlib.ExitStack() as stack:
            if self.adapter_off is not None:
                stack.enter_context(self.adapter_off())
            stack.enter_context(detached(*self.hooks))
            yield


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


@dataclass
class _Ingredients:
    """What an arm is built from, resolved on the clean base model before anything attaches."""

    saes: dict[int, SparseAutoencoder] = field(default_factory=dict)
    features: dict[int, tuple[int, ...]] = field(default_factory=dict)
    scrubber: Scrubber | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Study:
    """Shared state of a study: one base model, its text sets, layers and cached ingredients.

    Args:
        model: the base model (never copied; arms are built on it and removed again).
        tokenizer: its tokenizer.
        config: the study config.
        sets: the text and prompt sets.
        layers: the selected layers.
        artifacts: directory for cached ingredients (SAEs, features, scrubbers) and trained
            parts, or ``None`` to keep nothing after the study (trained parts then live in a
            scratch directory removed with the study object).
        show_progress: progress bars for training.
        base_shard: the study's base shard (its ``metrics`` and ``generations``), for
            :meth:`reuse`; ``None``: nothing is reused.
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
        base_shard: Mapping[str, Any] | None = None,
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
        self._features: dict[int, dict[int, tuple[int, ...]]] = {}  # seed -> layer -> latents
        self._sae_info: dict[int, dict[str, Any]] = {}
        self._scrubbers: dict[str, Scrubber] = {}
        self._scratch: Path | None = None  # trained parts without artifacts (see _adapter_dir)
        self._base: tuple[Records, dict[str, list[str]]] | None = None
        if base_shard is not None:
            self._base = (
                {
                    k: MetricRecord.from_dict(v, source=f"base shard {k}")
                    for k, v in base_shard["metrics"].items()
                },
                {k: list(v) for k, v in base_shard.get("generations", {}).items()},
            )
        # the robustness group's steering directions, fitted on the clean base model
        self.directions: dict[int, Tensor] | None = None

    # ------------------------------------------------------------------ shared ingredients
    def _check_clean(self) -> None:
        left = mmie_hooks(self.model)
        if left:
            raise InterventionError(f"the base model carries mmie hooks: {left}")
        if any(type(m).__module__.startswith("peft") for m in self.model.modules()):
            raise InterventionError("the base model carries a PEFT adapter")
        self.model.eval()

    def token_activations(self) -> dict[str, dict[int, Tensor]]:
        """Clean base-model token activations at the selected layers (collected once).

        Groups: ``"forget"`` and ``"retain"`` (the training texts), plus ``"romanized"`` and
        ``"gibberish"`` for the script-invariant picker.

        Raises:
            InterventionError: the model carries an adapter or hooks (an arm is attached):
                ingredients must come from the clean base model.
        """
        if self._tokens is None:
            self._check_clean()
            d = self.config.data
            groups = {"forget": self.sets.forget_train, "retain": self.sets.retain_train}
            if self.config.sae.picker == "script_invariant":
                groups["romanized"] = self.sets.picker_texts["romanized"]
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

    def _sae_dir(self, seed: int, layer: int) -> Path | None:
        if self.artifacts is None:
            return None
        return self.artifacts / f"seed{seed}" / "sae" / f"layer{layer}"

    def saes(
        self, seed: int
    ) -> tuple[dict[int, SparseAutoencoder], dict[int, tuple[int, ...]], dict[str, Any]]:
        """The seed's SAEs and the features to gate, from the clean base model.

        Loaded from the artifacts when a complete save exists (SAE weights, features and
        quality), else trained on :meth:`token_activations`, picked and saved.

        Returns:
            ``(layer -> SAE, layer -> feature indices, info)``.

        Raises:
            InterventionError: the picker selected no feature at a layer, or the model is
                not clean when something must be computed.
        """
        if seed not in self._saes:
            saes: dict[int, SparseAutoencoder] = {}
            features: dict[int, tuple[int, ...]] = {}
            quality: dict[str, Any] = {}
            for layer in self.layers:
                saes[layer], features[layer], quality[str(layer)] = self._sae(seed, layer)
            self._saes[seed] = saes
            self._features[seed] = features
            self._sae_info[seed] = quality
        saes, features = self._saes[seed], self._features[seed]
        info = {
            "sae_quality": self._sae_info.get(seed, {}),
            "features": {str(k): list(v) for k, v in features.items()},
        }
        return saes, features, info

    def _sae(
        self, seed: int, layer: int
    ) -> tuple[SparseAutoencoder, tuple[int, ...], dict[str, Any]]:
        """The seed's SAE at ``layer`` and its gated features: a configured pretrained SAE
        (the same for every seed), loaded from the artifacts, or trained and saved."""
        pretrained = self.config.sae.pretrained().get(layer)
        if pretrained is not None:
            return self._pretrained_sae(seed, layer, pretrained)
        where = self._sae_dir(seed, layer)
        if where is None:
            return self._train_sae(seed, layer, None)
        with _artifact_lock(where):
            if (where / _QUALITY_FILE).is_file():
                # The quality file is written last, so its presence means a complete save.
                try:
                    sae = SparseAutoencoder.load(where)
                    features = tuple(_read_json_file(where / _FEATURES_FILE)["indices"])
                    quality = _read_json_file(where / _QUALITY_FILE)
                except _UNREADABLE as exc:
                    _forget(where, _QUALITY_FILE, exc)
                else:
                    logger.info("seed %d: loaded the layer-%d SAE from %s", seed, layer, where)
                    return sae, features, quality
            return self._train_sae(seed, layer, where)

    def _train_sae(
        self, seed: int, layer: int, where: Path | None
    ) -> tuple[SparseAutoencoder, tuple[int, ...], dict[str, Any]]:
        """Train the seed's SAE at ``layer``, pick its features and save both to ``where``."""
        tokens = self.token_activations()
        cfg = self.config.sae
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
        features = self._pick(sae, layer, seed, tokens)
        quality = {
            "fvu": stats.final_fvu,
            "l0": stats.final_l0,
            "dead_fraction": stats.dead_fraction,
        }
        if where is not None:
            sae.save(where)
            atomic_write_json(where / _FEATURES_FILE, {"indices": list(features)})
            atomic_write_json(where / _QUALITY_FILE, quality)
            sae = SparseAutoencoder.load(where)  # what every later run will use, exactly
        return sae, features, quality

    def _pretrained_sae(
        self, seed: int, layer: int, directory: str
    ) -> tuple[SparseAutoencoder, tuple[int, ...], dict[str, Any]]:
        """A pretrained SAE from ``sae.paths``: read, checked on the clean base model's
        activations of the training texts (:func:`~mmie.check_reconstruction` raises when it
        clearly does not belong to ``layer``), and its features picked like a trained one's."""
        self._check_clean()
        sae = SparseAutoencoder.load(directory, layout=self.config.sae.layout)
        d = self.config.data
        report = check_reconstruction(
            self.model,
            self.tokenizer,
            sae,
            layer,
            [*self.sets.forget_train, *self.sets.retain_train],
            batch_size=d.batch_size,
            max_length=d.max_length,
        )
        features = self._pick(sae, layer, seed, self.token_activations())
        logger.info(
            "seed %d: layer %d uses the pretrained SAE %s (%s; FVU %.3g)",
            seed,
            layer,
            directory,
            sae.provenance.get("layout"),
            report.fvu,
        )
        quality = {
            "source": directory,
            "layout": sae.provenance.get("layout"),
            "fvu": report.fvu,
            "cosine": report.mean_cosine,
            "l0": report.mean_l0,
            "dead_fraction": report.dead_fraction,
        }
        return sae, features, quality

    def _pick(
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

    def scrubber(self, arm: ArmConfig, layers: tuple[int, ...]) -> Scrubber:
        """The LEACE scrubber of ``arm`` at ``layers``, fitted on the clean base model.

        It depends on no seed: fitted once per (layers, method, centre), cached in memory and
        under the artifacts.
        """
        key = f"{arm.scrub_method}-{arm.scrub_center}-layers{'_'.join(map(str, layers))}"
        if key in self._scrubbers:
            return self._scrubbers[key]
        where = None if self.artifacts is None else self.artifacts / "scrubber" / key
        with contextlib.ExitStack() as stack:
            if where is not None:
                stack.enter_context(_artifact_lock(where))
            scrubber = self._fit_scrubber(arm, layers, key, where)
        self._scrubbers[key] = scrubber
        return scrubber

    def _fit_scrubber(
        self, arm: ArmConfig, layers: tuple[int, ...], key: str, where: Path | None
    ) -> Scrubber:
        """The scrubber loaded from ``where``, or fitted (and saved there)."""
        if where is not None and (where / _SCRUBBER_DONE).is_file():
            try:
                scrubber = Scrubber.load(where, self.model)
            except _UNREADABLE as exc:
                _forget(where, _SCRUBBER_DONE, exc)
            else:
                logger.info("loaded the scrubber %s from %s", key, where)
                return scrubber
        self._check_clean()
        scrubber = fit_scrubber(
            self.model,
            self.tokenizer,
            {"retain": self.sets.retain_train, "forget": self.sets.forget_train},
            layers,
            method=arm.scrub_method,
            center="retain" if arm.scrub_center == "retain" else None,
            batch_size=self.config.data.batch_size,
            max_length=self.config.data.max_length,
        )
        if where is not None:
            scrubber.save(where)
            atomic_write_json(where / _SCRUBBER_DONE, {"key": key})
            scrubber = Scrubber.load(where, self.model)  # exactly what later runs load
        return scrubber

    def release_seed(self, seed: int) -> None:
        """Drop the seed's in-memory SAEs (they stay on disk under the artifacts)."""
        self._saes.pop(seed, None)
        self._features.pop(seed, None)

    def _ingredients(self, arm: ArmConfig, seed: int, layers: tuple[int, ...]) -> _Ingredients:
        """Resolve what ``arm`` is built from while the model is still clean."""
        out = _Ingredients()
        if arm.scrubs:
            out.scrubber = self.scrubber(arm, layers)
            out.info["scrubber_ranks"] = {str(k): e.rank for k, e in out.scrubber.erasers.items()}
        if arm.gate_part is not None:
            saes, features, info = self.saes(seed)
            if arm.layers:
                missing = [layer for layer in arm.layers if layer not in saes]
                if missing:
                    raise InterventionError(
                        f"arm {arm.name!r} gates layers {missing} that have no SAE; SAEs "
                        f"exist for the selected layers {list(saes)}"
                    )
                features = {k: v for k, v in features.items() if k in arm.layers}
            out.saes, out.features = saes, features
            out.info.update(info)
        return out

    def prepare(self, arm: ArmConfig, seed: int) -> list[str]:
        """Compute (or load) and cache what ``arm`` is built from for ``seed`` -- the seed's
        SAEs and their features, the arm's scrubber -- without building or training the arm
        (``mmie prepare``); trained adapters are the arm's own work and are not made here.

        Returns:
            What the arm uses, e.g. ``["SAEs of seed 0 (layers [1, 2])", "scrubber ..."]``
            (empty for controls and arms without shared ingredients).

        Raises:
            InterventionError: the model is not clean, or an ingredient cannot be made (the
                unit would fail the same way).
        """
        if arm.control is not None or not (arm.scrubs or arm.gate_part is not None):
            return []
        self._check_clean()
        layers = arm.layers or self.layers
        ingredients = self._ingredients(arm, seed, layers)
        names = []
        if ingredients.saes:
            names.append(f"SAEs of seed {seed} (layers {sorted(ingredients.saes)})")
        if ingredients.scrubber is not None:
            names.append(f"scrubber {arm.scrub_method}-{arm.scrub_center} (layers {list(layers)})")
        return names

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

    def _adapter_dir(self, arm: ArmConfig, seed: int, layers: tuple[int, ...]) -> Path | None:
        """Where the trained part of ``arm`` for ``seed`` is cached: one directory per set of
        training options, so ``lora`` and ``lora+sae_gate`` (``reft`` and ``reft+...``)
        share one trained part, trained once per study. The texts are the study's (the
        artifacts directory is per config fingerprint, which covers the data); without
        artifacts, a scratch directory that lives as long as this object."""
        if arm.trained_part is None:
            return None
        root = self.artifacts
        if root is None:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="mmie-study-"))
                weakref.finalize(self, shutil.rmtree, self._scratch, ignore_errors=True)
            root = self._scratch
        options = {
            "part": arm.trained_part,
            "unlearn": self._unlearn_config(arm, seed).to_dict(),
            "rank": arm.rank,
            "layers": list(layers) if arm.trained_part == "reft" else None,
        }
        digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
        return root / f"seed{seed}" / arm.trained_part / digest

    @contextlib.contextmanager
    def _trained(self, arm: ArmConfig, seed: int, layers: tuple[int, ...]) -> Iterator[ArmState]:
        part = arm.trained_part
        if part is None:
            yield ArmState(model=self.model)
            return
        where = self._adapter_dir(arm, seed, layers)
        if where is None:
            with self._train(arm, seed, layers) as state:
                yield state
            return
        with _artifact_lock(where):
            if not _adapter_complete(where):
                with self._train(arm, seed, layers, save_to=where) as state:
                    pass  # trained and saved; evaluated below from the saved adapter, as reruns are
            info = _read_json_file(where / _TRAINING_FILE)
        if part == "lora":
            with restored_lora_arm(self.model, where) as peft_model:
                yield ArmState(
                    model=peft_model,
                    info={"training": info},
                    adapter_off=peft_model.disable_adapter,
                )
        else:
            adapter = ReFTAdapter.load(where, self.model)
            with adapter:
                yield ArmState(model=self.model, info={"training": info}, hooks=[adapter])
        logger.debug("seed %d: %s evaluated from the adapter saved in %s", seed, part, where)

    @contextlib.contextmanager
    def _train(
        self, arm: ArmConfig, seed: int, layers: tuple[int, ...], *, save_to: Path | None = None
    ) -> Iterator[ArmState]:
        """Train the arm's LoRA or ReFT part (and save it to ``save_to``, the info last)."""
        sets = self.sets
        if arm.trained_part == "lora":
            with lora_arm(
                self.model,
                self.tokenizer,
                sets.forget_train,
                sets.retain_train,
                config=self._unlearn_config(arm, seed),
                rank=arm.rank,
                show_progress=self.show_progress,
            ) as result:
                info = _training_info(result)
                if save_to is not None:
                    save_lora(result.model, save_to)
                    atomic_write_json(save_to / _TRAINING_FILE, info)
                yield ArmState(
                    model=result.model,
                    info={"training": info},
                    adapter_off=result.model.disable_adapter,
                )
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
                info = _training_info(result)
                if save_to is not None:
                    result.adapter.save(save_to)
                    atomic_write_json(save_to / _TRAINING_FILE, info)
                yield ArmState(model=self.model, info={"training": info}, hooks=[result.adapter])

    def reuse(self, state: ArmState) -> dict[str, Any]:
        """Keyword arguments of :func:`~mmie.study.suite.evaluate_model` that reuse the base
        model's results for ``state``: its base records when it
        :attr:`~ArmState.scores_as_base`, and its generations too when it
        :attr:`~ArmState.generates_as_base`; ``{}`` without a base shard or otherwise."""
        if self._base is None or not state.scores_as_base:
            return {}
        records, generations = self._base
        out: dict[str, Any] = {"base_records": records}
        if state.generates_as_base:
            out["base_generations"] = generations
        return out

    def _control(self, arm: ArmConfig, seed: int, layers: tuple[int, ...]) -> ArmState:
        state = ArmState(model=self.model, info={"control": arm.control})
        if arm.control == "script_ban":
            state.logits_processors.append(ScriptBanProcessor(self.tokenizer, self.config.target))
        elif arm.control == "eos":
            eos = self.tokenizer.eos_token_id
            if eos is None:
                raise InterventionError("the eos control needs a tokenizer with an EOS token")
            state.logits_processors.append(ForcedEOSProcessor(int(eos)))
        elif arm.control == "noise":
            noise = NoiseIntervention(self.model, layers[0], scale=arm.noise_scale, seed=seed)
            state.hooks.append(noise.attach())
            state.info["noise"] = {"layer": layers[0], "scale": arm.noise_scale}
        return state

    @contextlib.contextmanager
    def arm(self, arm: ArmConfig, seed: int) -> Iterator[ArmState]:
        """Build ``arm`` for ``seed`` on the base model, yield it, then release it.

        The arm's ingredients (SAEs and features, scrubber) are resolved first, on the clean
        base model; only then is the trained part trained and the rest attached.

        Raises:
            InterventionError: the base model carries hooks or an adapter before the arm is
                built or after it was released (later arms would be contaminated).
        """
        layers = arm.layers or self.layers
        self._check_clean()
        try:
            with contextlib.ExitStack() as stack:
                if arm.control is not None:
                    state = self._control(arm, seed, layers)
                    for hook in state.hooks:
                        stack.callback(hook.remove)
                    yield state
                    return
                ingredients = self._ingredients(arm, seed, layers)
                state = stack.enter_context(self._trained(arm, seed, layers))
                state.info.update(ingredients.info)
                model = state.model
                model.eval()
                if ingredients.scrubber is not None:
                    scrubber = _rebind(ingredients.scrubber, model)
                    stack.enter_context(scrubber)
                    state.hooks.append(scrubber)
                if arm.gate_part is not None:
                    alpha = arm.alpha if arm.gate_part == "sae_gate" else arm.base_alpha
                    gate = SAEGate(model, ingredients.saes, ingredients.features, alpha=alpha)
                    stack.enter_context(gate)
                    state.hooks.append(gate)
                    if arm.gate_part == "dynamic_gate":
                        state.logits_processors.append(
                            DynamicGatingProcessor(
                                gate,
                                self.tokenizer,
                                target_script=self.config.target,
                                base_alpha=arm.base_alpha,
                                high_alpha=arm.alpha,
                                penalty=arm.penalty or None,
                                detector=make_detector(self.config.languages.detector),
                                target_language=self.config.target,
                                detect_every=4,
                            )
                        )
                yield state
        finally:
            self._check_clean()


def _adapter_complete(where: Path) -> bool:
    """Whether ``where`` holds a complete, readable trained adapter (its training record,
    written last, and weights that are valid safetensors with finite values)."""
    if not (where / _TRAINING_FILE).is_file():
        return False
    try:
        _read_json_file(where / _TRAINING_FILE)
        weights = sorted(where.glob("*.safetensors"))
        if not weights:
            raise CheckpointError(f"{where} holds no weights file")
        for path in weights:
            read_safetensors(path)
    except _UNREADABLE as exc:
        _forget(where, _TRAINING_FILE, exc)
        return False
    return True


def _rebind(scrubber: Scrubber, model: nn.Module) -> Scrubber:
    """The cached scrubber's erasers as a scrubber of ``model`` (a LoRA arm's PeftModel)."""
    if scrubber.model is model:
        return scrubber
    return Scrubber(model, scrubber.erasers, block_path=scrubber.block_path)

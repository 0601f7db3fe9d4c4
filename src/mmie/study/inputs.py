"""What a study's results depend on besides its config: the texts, the models, mmie itself.

The config fingerprint (:func:`~mmie.study.shards.config_fingerprint`) covers the config; a
data file edited in place, a model directory overwritten with other weights or another mmie
release would change results without changing it. :func:`study_inputs` records what was
actually used, and every shard carries it (``"inputs"``):

* ``texts``: per item list a study loaded (the training texts, each evaluation set, each
  prompt set, the picker's texts), the SHA-256 of exactly the texts used (after
  normalisation, deduplication and the ``n_*`` cut), the number of texts and the set's
  name or path. Lines of a file beyond the ones used do not enter.
* ``model`` and ``references``: one fingerprint per model (:func:`model_fingerprint`):

  ===============  =========================================================================
  model            fingerprint
  ===============  =========================================================================
  ``demo[:which]`` the SHA-256 of each of the bundled model's files
  local directory  every regular file at the top of the directory (hidden files and
                   ``*.md`` aside): its size and SHA-256 when it is at most
                   :data:`HASH_LIMIT` bytes (configs, tokenizers, small weights), else its
                   size and modification time (``mtime_ns``); so large weight files are not
                   read, and a copy of them elsewhere counts as changed
  hub id           the id and the commit the local Hugging Face cache resolves ``main`` to
                   (``None`` when it is not cached)
  in-process       (``model=`` passed to :func:`~mmie.run_experiment` while ``config.model``
                   names nothing that can be found) the SHA-256 of every parameter and
                   buffer (names, dtypes, shapes, bytes) when they total at most
                   :data:`IN_PROCESS_HASH_LIMIT` bytes, else of the names, dtypes, shapes
                   and every 4099th value
  ===============  =========================================================================

  A model passed in-process whose ``config.model`` is the demo, an existing directory or a
  cached hub id gets that source's fingerprint: the caller vouches that it is that model
  (the report names ``config.model`` too), so a later run that loads it itself resumes.

* ``saes`` (only when ``sae.paths`` names pretrained SAEs): per layer, the SAE's path and
  each of its files (a file, or every regular file up to three directories deep, hidden
  files and ``*.md`` aside) with its size and SHA-256 up to :data:`HASH_LIMIT` bytes, its
  size and ``mtime_ns`` above, as for a local model directory.
* ``mmie_version``: the installed version.

:func:`~mmie.study.shards.load_shards` (and so :func:`~mmie.aggregate`) refuses shards whose
inputs disagree and says which input changed (:func:`input_changes`); a resumed run into a
directory written with other inputs refuses with the same reason (rerun with
``--no-resume`` to recompute everything, or use another output directory).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmie._version import __version__
from mmie.study.config import ExperimentConfig
from mmie.study.demo import DEMO_MODEL_FILES, demo_model_path
from mmie.study.suite import EvalSets

__all__ = [
    "HASH_LIMIT",
    "IN_PROCESS_HASH_LIMIT",
    "hub_cache_dir",
    "hub_cached",
    "input_changes",
    "model_fingerprint",
    "sae_fingerprints",
    "study_inputs",
    "text_fingerprints",
]

HASH_LIMIT = 64 * 2**20  # files of a local model directory up to this size are hashed
IN_PROCESS_HASH_LIMIT = 2**30  # in-process models up to this many bytes are hashed whole
_SAMPLE_STRIDE = 4099


def _sha256_texts(texts: list[str]) -> str:
    data = json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def text_fingerprints(config: ExperimentConfig, sets: EvalSets) -> dict[str, dict[str, Any]]:
    """Item list -> ``{"set": name or path, "n": texts, "sha256": of the texts used}``."""
    d = config.data
    sources = {
        "forget_train": d.forget,
        "retain_train": d.retain,
        "forget_eval": d.forget_eval,
        "retain_eval": d.retain_eval,
        "prompts.forget": d.forget_eval,
        "prompts.english": d.retain_eval,
    }
    lists: dict[str, list[str]] = {**sets.items(), "retain_train": sets.retain_train}
    lists.update({f"picker.{k}": v for k, v in sets.picker_texts.items()})
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(lists):
        texts = list(lists[key])
        head, _, rest = key.partition(".")
        if key in sources:
            source = sources[key]
        elif head == "prompts":  # prompts.<group>.<set>
            source = rest.partition(".")[2]
        elif head == "picker":
            source = d.romanized[0] if d.romanized else ""
        else:  # related.<set>
            source = rest
        out[key] = {"set": source, "n": len(texts), "sha256": _sha256_texts(texts)}
    return out


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (``HF_HUB_CACHE``,
    ``HF_HOME``/hub, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_cached(repo_id: str) -> bool:
    """Whether the hub cache holds a snapshot of ``repo_id`` with a ``config.json``."""
    root = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return any(root.glob("*/config.json"))


def _findable(name: str) -> bool:
    if name == "demo" or name.startswith("demo:"):
        return True
    return Path(name).expanduser().is_dir() or hub_cached(name)


def _hub_revision(repo_id: str) -> str | None:
    ref = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _in_process_fingerprint(model: nn.Module) -> dict[str, Any]:
    state = model.state_dict()
    total = sum(t.numel() * t.element_size() for t in state.values())
    whole = total <= IN_PROCESS_HASH_LIMIT
    digest = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.reshape(-1)
        if not whole:
            flat = flat[::_SAMPLE_STRIDE]
        flat = flat.to("cpu").contiguous()
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return {
        "kind": "in-process",
        "sha256": digest.hexdigest(),
        "hashed": "whole" if whole else f"every {_SAMPLE_STRIDE}th value",
    }


def model_fingerprint(name: str, *, model: nn.Module | None = None) -> dict[str, Any]:
    """A fingerprint of the model ``name`` (see the module docstring for each kind).

    Args:
        name: ``"demo"``, ``"demo:<which>"``, a local directory or a hub id.
        model: an already loaded model standing for ``name`` (fingerprinted from its
            tensors instead).
    """
    if model is not None:
        return _in_process_fingerprint(model)
    if name == "demo" or name.startswith("demo:"):
        which = "base" if name == "demo" else name.split(":", 1)[1]
        path = demo_model_path(which)  # type: ignore[arg-type]
        return {
            "kind": "demo",
            "name": which,
            "files": {f: _sha256_file(path / f) for f in DEMO_MODEL_FILES},
        }
    path = Path(name).expanduser()
    if path.is_dir():
        files: dict[str, dict[str, Any]] = {}
        for entry in sorted(path.iterdir()):
            if entry.name.startswith(".") or entry.suffix == ".md" or not entry.is_file():
                continue
            stat = entry.stat()
            if stat.st_size <= HASH_LIMIT:
                files[entry.name] = {"size": stat.st_size, "sha256": _sha256_file(entry)}
            else:
                files[entry.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return {"kind": "local", "files": files}
    return {"kind": "hub", "id": name, "revision": _hub_revision(name)}


def _file_entry(path: Path) -> dict[str, Any]:
    stat = path.stat()
    if stat.st_size <= HASH_LIMIT:
        return {"size": stat.st_size, "sha256": _sha256_file(path)}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _tree_files(root: Path, depth: int = 3) -> dict[str, dict[str, Any]]:
    """Every regular file under ``root`` (``depth`` levels; hidden entries and ``*.md``
    aside), by its path relative to ``root``."""
    files: dict[str, dict[str, Any]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.suffix == ".md":
            continue
        if entry.is_file():
            files[entry.name] = _file_entry(entry)
        elif entry.is_dir() and depth > 1:
            for name, info in _tree_files(entry, depth - 1).items():
                files[f"{entry.name}/{name}"] = info
    return files


def sae_fingerprints(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """``layer -> {"path", "files"}`` of the pretrained SAEs in ``config.sae.paths`` (module
    docstring); a path that does not exist has no files (``{}``)."""
    out: dict[str, dict[str, Any]] = {}
    for layer, directory in sorted(config.sae.pretrained().items()):
        path = Path(directory).expanduser()
        if path.is_file():
            files = {path.name: _file_entry(path)}
        elif path.is_dir():
            files = _tree_files(path)
        else:
            files = {}
        out[str(layer)] = {"path": directory, "files": files}
    return out


def study_inputs(
    config: ExperimentConfig, sets: EvalSets, *, model: nn.Module | None = None
) -> dict[str, Any]:
    """The inputs record of a study (module docstring): texts, models, pretrained SAEs,
    mmie version."""
    record: dict[str, Any] = {
        "texts": text_fingerprints(config, sets),
        "model": model_fingerprint(config.model, model=None if _findable(config.model) else model),
        "references": {
            name: model_fingerprint(source) for name, source in config.references.named().items()
        },
        "mmie_version": __version__,
    }
    if config.sae.paths:
        record["saes"] = sae_fingerprints(config)
    return record


def _model_change(what: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if old.get("kind") != new.get("kind"):
        return f"{what}: a {old.get('kind')} model before, a {new.get('kind')} model now"
    if old.get("kind") in ("local", "demo"):
        a, b = old.get("files", {}), new.get("files", {})
        changed = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
        return f"{what}: its files changed ({', '.join(changed[:5]) or 'contents'})"
    if old.get("kind") == "hub":
        return f"{what}: hub revision {old.get('revision')} before, {new.get('revision')} now"
    return f"{what}: its weights differ (sha256 {old.get('sha256')} vs {new.get('sha256')})"


def _same_model(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal fingerprints; a hub model whose revision was unknown (not yet cached when one
    of them was taken) matches the same id at any revision."""
    if a == b:
        return True
    if a is None or b is None or a.get("kind") != "hub" or b.get("kind") != "hub":
        return False
    return a.get("id") == b.get("id") and None in (a.get("revision"), b.get("revision"))


def input_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """What differs between two inputs records, one readable line per input (empty: none).

    A record that is missing (``None``, e.g. a shard of an older format) differs from any.
    A hub model whose revision was unknown to one of them matches any revision of its id.
    """
    if old == new:
        return []
    if old is None or new is None:
        return ["one of them records no inputs (written by an older mmie)"]
    changes: list[str] = []
    if old.get("mmie_version") != new.get("mmie_version"):
        changes.append(f"mmie version {old.get('mmie_version')} vs {new.get('mmie_version')}")
    a, b = old.get("texts", {}), new.get("texts", {})
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        source = (x or y or {}).get("set", "")
        if x is None or y is None:
            changes.append(f"texts {key} ({source}): used by only one of them")
        else:
            changes.append(
                f"texts {key} ({source}): the {y['n']} texts used now differ from the "
                f"{x['n']} used before (sha256 {x['sha256'][:12]} vs {y['sha256'][:12]}); "
                "was the file edited?"
            )
    if not _same_model(old.get("model"), new.get("model")):
        changes.append(_model_change("model", old.get("model", {}), new.get("model", {})))
    ra, rb = old.get("references", {}), new.get("references", {})
    for name in sorted(set(ra) | set(rb)):
        if not _same_model(ra.get(name), rb.get(name)):
            changes.append(_model_change(f"reference {name}", ra.get(name, {}), rb.get(name, {})))
    sa, sb = old.get("saes", {}), new.get("saes", {})
    for layer in sorted(set(sa) | set(sb), key=int):
        x, y = sa.get(layer), sb.get(layer)
        if x == y:
            continue
        if x is None or y is None:
            changes.append(f"pretrained SAE of layer {layer}: used by only one of them")
        elif x.get("path") != y.get("path"):
            changes.append(
                f"pretrained SAE of layer {layer}: {x.get('path')} before, {y.get('path')} now"
            )
        else:
            a_files, b_files = x.get("files", {}), y.get("files", {})
            changed = sorted(
                f for f in set(a_files) | set(b_files) if a_files.get(f) != b_files.get(f)
            )
            changes.append(
                f"pretrained SAE of layer {layer} ({y.get('path')}): its files changed "
                f"({', '.join(changed[:5]) or 'contents'})"
            )
    known = {"mmie_version", "texts", "model", "references", "saes"}
    if any(old.get(k) != new.get(k) for k in (set(old) | set(new)) - known):
        changes.append("their inputs records differ")
    return changes

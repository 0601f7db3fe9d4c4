"""Atomic writes and checkpoint configs (mmie._io)."""

from __future__ import annotations

import json

import pytest
import torch

from mmie._io import (
    atomic_write_json,
    atomic_write_text,
    read_checkpoint_config,
    write_checkpoint,
)
from mmie.errors import CheckpointError


def test_failed_write_keeps_old_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "shard.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError, match="Out of range float values"):
        atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.json"]


def test_equal_data_gives_equal_bytes(tmp_path):
    a = atomic_write_json(tmp_path / "a.json", {"b": 2, "a": [1, 2]})
    b = atomic_write_json(tmp_path / "b.json", {"a": [1, 2], "b": 2})
    assert a.read_bytes() == b.read_bytes()
    assert atomic_write_text(tmp_path / "x" / "t.md", "héllo").read_text() == "héllo"


def test_checkpoint_roundtrip_and_config_errors(tmp_path):
    from safetensors.torch import load_file

    t = {"w": torch.arange(6.0).reshape(2, 3).t()}  # non-contiguous on purpose
    write_checkpoint(
        tmp_path,
        tensors=t,
        weights_name="w.safetensors",
        config={"format": "x"},
        config_name="c.json",
    )
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["w"], t["w"])
    assert read_checkpoint_config(tmp_path / "c.json", fmt="x") == {"format": "x"}
    with pytest.raises(CheckpointError, match="is not a 'y' config"):
        read_checkpoint_config(tmp_path / "c.json", fmt="y")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        read_checkpoint_config(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        read_checkpoint_config(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError):
        read_checkpoint_config(tmp_path / "missing.json")

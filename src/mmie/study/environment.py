"""The environment a study ran in: versions, platform, device and git commit."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mmie._version import __version__

__all__ = ["environment_manifest"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- environment
def environment_manifest(device: str | None = None) -> dict[str, Any]:
    """Versions, platform, device and git commit, for reproducibility.

    Args:
        device: the device the study ran on (as resolved), if known.

    Returns:
        A JSON-ready dictionary (``git_commit`` is ``None`` outside a git checkout).
    """
    versions: dict[str, str | None] = {}
    for dist in ("torch", "transformers", "peft", "numpy", "scipy", "safetensors"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit: str | None = None
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        logger.debug("git is not available; no commit recorded", exc_info=True)
    accelerator: str | None = None
    if device is not None and device.startswith("cuda") and torch.cuda.is_available():
        accelerator = torch.cuda.get_device_name(torch.device(device))
    return {
        "mmie": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": versions,
        "device": device,
        "accelerator": accelerator,
        "git_commit": commit,
    }

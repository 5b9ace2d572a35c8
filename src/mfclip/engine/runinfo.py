"""The run directory: its layout, the resolved config, the environment record and the final summary.

::

    RUN/
      config.yaml          resolved training config (what --resume RUN reads back)
      env.json             git revision, package versions, command line, host, seed, devices
      data.json            where the training and validation rows came from, and their counts
      checkpoints/last.ckpt, checkpoints/best.ckpt      Lightning checkpoints (written atomically)
      best/                mfclip checkpoint directory of the best-val-AUC model
      logs/                tensorboard/ and csv/
      train_summary.json   status, best val AUC, steps, epochs, timing
      eval/                what ``mfclip eval RUN`` writes (``docs/evaluation.md``)

Every part of mfclip that reads or writes these names imports them from here.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mfclip.metrics.report import (
    EVAL_DIR as EVAL_DIR,
)  # RUN/eval; metrics reads it too, so it is defined there
from mfclip.utils.io import atomic_write_json, atomic_write_text

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
DATA_FILE = "data.json"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
BEST_DIR = "best"
LOG_DIR = "logs"
#: Any of these marks a folder as a training run directory.
RUN_MARKERS = (CONFIG_FILE, SUMMARY_FILE, CHECKPOINT_DIR)

_PACKAGES = (
    "mfclip",
    "torch",
    "lightning",
    "torchmetrics",
    "open_clip_torch",
    "numpy",
    "timm",
    "torchvision",
)


def timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def slug(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (a safe folder name)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def git_revision(start: Path | None = None) -> dict[str, Any] | None:
    """The git commit (and whether the tree has changes) of the repository holding ``start``, if any."""
    folder = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(seed: int, argv: list[str] | None = None) -> dict[str, Any]:
    """What env.json records about the machine and the software a run used."""
    import torch

    devices = []
    if torch.cuda.is_available():
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "created_utc": utc_now(),
        "argv": list(sys.argv if argv is None else argv),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": git_revision(),  # the repository mfclip runs from, when it is a source checkout
        "cwd_git": git_revision(Path.cwd()),  # the repository the run was started in, if any
        "seed": seed,
        "cuda_devices": devices,
        "cuda_version": torch.version.cuda,
    }


def write_run_files(
    run_dir: Path,
    config_yaml: str,
    seed: int,
    data: dict[str, Any],
    argv: list[str] | None = None,
    resumed: bool = False,
) -> None:
    """Write config.yaml, env.json and data.json; a resumed run writes its environment to
    ``env.resume-<n>.json`` and keeps the first run's env.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, config_yaml)
    env_path = run_dir / ENV_FILE
    if resumed and env_path.exists():
        count = len(list(run_dir.glob("env.resume-*.json"))) + 1
        env_path = run_dir / f"env.resume-{count}.json"
    atomic_write_json(env_path, environment(seed, argv))
    atomic_write_json(run_dir / DATA_FILE, data)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(run_dir / SUMMARY_FILE, summary)


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``train_summary.json``; None when it is missing or unreadable (a run still starting)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a training run directory (holds its config, summary or checkpoints)."""
    return any((Path(path) / name).exists() for name in RUN_MARKERS)

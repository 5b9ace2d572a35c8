"""Lightning plug-ins of the training engine: atomic checkpoint files, exact resume, best-model export."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mfclip.engine.checkpoints import HashingWriter, keep_as_step_checkpoint, remove_with_record, write_record
from mfclip.engine.datamodule import SamplingPosition
from mfclip.utils.io import atomic_write

logger = logging.getLogger(__name__)

RESUME_STATE_KEY = "mfclip_resume_state"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, fsyncs it and renames it into place,
    then records its size and SHA-256 in ``<file>.integrity.json`` (hashed while writing).

    An interrupted save (Ctrl-C, a killed job, a full disk) leaves the previous checkpoint of that name
    intact. Lightning's own writer stages the file in the system temp folder and moves it over, which turns
    into a truncating copy when that folder is on another file system. Remote (``scheme://``) paths keep
    Lightning's writer (and get no integrity record).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        with atomic_write(path, "wb") as handle:
            written = HashingWriter(handle)
            torch.save(checkpoint, written)
        write_record(path, checkpoint, written)

    def remove_checkpoint(self, path: Any) -> None:
        if "://" in str(path) or Path(path).is_dir():
            super().remove_checkpoint(path)
            return
        remove_with_record(Path(path))


def _rng_state() -> dict[str, Any]:
    """Global random states (torch, CUDA, NumPy, Python) as tensors and plain values (weights_only-safe)."""
    numpy_state = np.random.get_state(legacy=False)
    inner = numpy_state["state"]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(inner["key"], dtype=np.int64)),
            "pos": int(inner["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": saved["bit_generator"],
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


class ResumeState(L.Callback):
    """Saves and restores what Lightning's checkpoints lack for an exact resume.

    - the sampling position (epoch and batches done), so a run resumed mid-epoch draws the remaining
      batches of that epoch, in the same order and with the same augmentations;
    - the global random states, so dropout and every other random draw continue as in an uninterrupted run.

    Random states are those of global rank 0; all processes of a run are seeded alike.
    """

    def __init__(self, position: SamplingPosition) -> None:
        self.position = position

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.position.batches_done = batch_idx + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.position.epoch += 1
        self.position.batches_done = 0

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        epoch, done = self.position.epoch, self.position.batches_done
        if done >= trainer.num_training_batches:  # saved after the epoch's last batch: resume at the next
            epoch, done = epoch + 1, 0
        checkpoint[RESUME_STATE_KEY] = {"epoch": epoch, "batches_done": done, "rng": _rng_state()}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(RESUME_STATE_KEY)
        if state is None:
            logger.warning("the checkpoint holds no sampling position: resuming at the start of an epoch")
            self.position.epoch = int(checkpoint.get("epoch", 0)) + 1
            self.position.batches_done = 0
            return
        self.position.epoch = int(state["epoch"])
        self.position.batches_done = int(state["batches_done"])
        _set_rng_state(state["rng"])


class LastCheckpoint(L.Callback):
    """Writes ``path`` (``last.ckpt``) every ``every_n_steps`` optimizer steps, after every epoch, at the end.

    With ``keep_previous`` > 0 the file being replaced is kept as ``step-N.ckpt`` (a hard link), the newest
    ``keep_previous`` of them, so a damaged ``last.ckpt`` still leaves a recent point to resume from.
    Lightning's ``ModelCheckpoint`` cannot combine a step interval with epoch-end saves; this does both.
    Mid-accumulation batches are skipped (their gradients would be lost).
    """

    def __init__(self, path: str | Path, every_n_steps: int | None = None, keep_previous: int = 0) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.keep_previous = keep_previous  # earlier last.ckpt files kept as step-N.ckpt
        self.saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            keep_as_step_checkpoint(self.path, self.keep_previous)
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self.saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        step = trainer.global_step
        if self.every_n_steps and stepped and step % self.every_n_steps == 0 and step != self.saved_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.saved_step:
            self._save(trainer)


class BestModelExport(L.Callback):
    """Exports the model as an mfclip checkpoint directory each time ``val/auc`` improves.

    ``export(module, metrics)`` does the writing; it runs on global rank 0 only. The comparison matches the
    best-checkpoint callback's (strictly greater), and the best value so far travels in Lightning checkpoints
    so a resumed run does not export a worse model.
    """

    def __init__(
        self, export: Callable[[L.LightningModule, dict[str, float]], None], monitor: str = "val/auc"
    ):
        self.export = export
        self.monitor = monitor
        self.best: float | None = None
        self.best_epoch: int | None = None  # epochs trained when the best validation ran
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        current = float(value)
        if not np.isfinite(current) or (self.best is not None and current <= self.best):
            return
        self.best = current
        self.best_epoch = trainer.current_epoch + 1
        self.best_step = int(trainer.global_step)
        self.best_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if trainer.is_global_zero:
            self.export(pl_module, dict(self.best_metrics))

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "best_metrics": dict(self.best_metrics),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_epoch = state_dict.get("best_epoch")
        self.best_step = state_dict.get("best_step")
        self.best_metrics = dict(state_dict.get("best_metrics") or {})

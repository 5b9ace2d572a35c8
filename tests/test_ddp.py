"""Data-parallel training: two CPU processes (DDP over gloo) with batch 4 train exactly as one with batch 8.

The contrastive loss gathers features across processes, the sampler shards one global order and the
validation metrics are reduced over both processes, so weights and validation metrics must match. The
noise branch is switched off for this comparison: its BatchNorm normalises per process (``sync_batchnorm``
is a GPU feature), which is the one legitimate difference between the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfclip.engine.train import train_from_args
from train_toy import SMALL, write_toy_dataset

SCRIPT = Path(__file__).with_name("ddp_script.py")
# Adam's eps keeps gradients that are zero up to rounding (e.g. attention key biases) from being blown up
# into full-size updates whose sign depends on the summation order.
COMMON = [
    *(o for o in SMALL if not o.startswith("data.batch_size")),
    "model.overrides.vision.noise_branch=false",
    "optim.eps=1e-3",
    "trainer.max_epochs=1",
]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_global_batch(tmp_path: Path) -> None:
    manifest = write_toy_dataset(tmp_path / "data", {"train": 8, "val": 6, "test": 0})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    process = subprocess.run(
        [sys.executable, str(SCRIPT), str(manifest), str(ddp_run), *COMMON, "data.batch_size=4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    train_from_args("tiny", [*COMMON, "data.batch_size=8"], manifest=str(manifest), out=str(single_run))

    summaries = [json.loads((run / "train_summary.json").read_text()) for run in (ddp_run, single_run)]
    assert [s["world_size"] for s in summaries] == [2, 1]
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == 2
    ddp_val, single_val = (s["last_val_metrics"] for s in summaries)
    assert ddp_val.keys() == single_val.keys() == {"val/auc", "val/acc", "val/loss"}
    assert ddp_val == pytest.approx(single_val, abs=1e-6)
    ddp_weights, single_weights = (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in (ddp_run, single_run)
    )
    for key, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=0, atol=2e-6, msg=key)

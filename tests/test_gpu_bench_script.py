"""The GPU training benchmark script runs end to end on the CPU (``--cpu-smoke``) and writes its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu" / "train_bench.py"

MODEL_KEYS = {
    "model",
    "image_size",
    "batch",
    "parameters",
    "train_step_ms",
    "train_images_per_s",
    "flops_per_step",
    "inference_images_per_s",
}
ENGINE_KEYS = {"model", "precision", "steps", "status", "best_val_auc", "steady_images_per_s"}


@pytest.mark.slow
def test_cpu_smoke_run_writes_the_report(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OUT", None)
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--out-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    report = json.loads((tmp_path / "train_gpu.json").read_text())
    assert report["benchmark"] == "train_gpu" and report["smoke"] is True
    assert report["environment"].keys() >= {"device", "torch", "python"}
    assert [row["model"] for row in report["models"]] == ["mfclip-tiny", "clip-finetune-tiny"]
    for row in report["models"]:
        assert row.keys() >= MODEL_KEYS, sorted(MODEL_KEYS - row.keys())
        assert row["train_step_ms"] > 0 and row["inference_images_per_s"] > 0
    engine = report["engine"]
    assert engine.keys() >= ENGINE_KEYS, sorted(ENGINE_KEYS - engine.keys())
    assert engine["status"] == "completed" and engine["steps"] == 2
    assert (tmp_path / "train_gpu.md").read_text().strip()

"""Resumable jobs killed with SIGKILL in a real process, at points drawn at random, then resumed.

The child process runs the job through its Python API with a trap that kills it (SIGKILL: no cleanup,
no ``finally``, no lock release) at the N-th record appended to the job's log, after writing a random
part of that append, or just before the N-th file lands by an atomic rename. The resumed output must be
the uninterrupted run's: no row lost, none duplicated.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model

SEED = int(os.environ.get("MFCLIP_KILL_SEED", "0"))

CHILD = r"""
import json, os, signal, sys

spec = json.loads(sys.argv[1])
kind, nth, fraction = spec["kill"]
calls = {"n": 0}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if kind == "append":
    from mfclip.utils.jobs import ENCODING, ERRORS, AppendLog

    real_append = AppendLog.append

    def append(self, records):
        records = list(records)
        calls["n"] += 1
        if calls["n"] == nth:  # write part of this append, as a kill in the middle of write() does
            data = self.format.encode(records).encode(ENCODING, ERRORS)
            with open(self.path, "ab") as handle:
                handle.write(data[: int(len(data) * fraction)])
            die()
        real_append(self, records)

    AppendLog.append = append
else:
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:  # the temporary file is written, the rename never happens
            die()
        return real_replace(source, target, *args, **kwargs)

    os.replace = replace

args = spec["args"]
if spec["job"] == "predict":
    from mfclip import Detector
    from mfclip.inference.predict import PredictOptions, predict_files

    detector = Detector.from_pretrained(args["checkpoint"], device="cpu")
    options = PredictOptions(progress=False, resume=True, batch_size=2, num_workers=0)
    predict_files(detector, args["inputs"], args["out"], options)
elif spec["job"] == "evaluate":
    from mfclip.engine.evaluate import evaluate

    evaluate(args["checkpoint"], manifest=args["manifest"], out_dir=args["out"], batch_size=3, workers=0,
             plots=False, progress=False)
else:
    from mfclip.face.pipeline import PreprocessConfig, preprocess

    preprocess(args["inputs"], args["out"], PreprocessConfig(**args["config"]))
print("finished without being killed", flush=True)
"""


def _killed_run(job: str, kill: tuple[str, int, float], **args: object) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    spec = json.dumps({"job": job, "kill": list(kill), "args": args}, default=str)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, spec], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, (kill, child.stdout, child.stderr[-3000:])


def _kill_points(job: str, appends: int, replaces: int = 0) -> list[tuple[str, int, float]]:
    """A torn append somewhere in the run, then (with ``replaces``) a kill before one of the last files."""
    rng = random.Random(f"{SEED}:{job}")
    points = [("append", rng.randint(2, appends), round(rng.uniform(0.05, 0.95), 3))]
    if replaces:
        points.append(("replace", rng.randint(1, replaces), 0.0))
    return points


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 small images (6 real, 6 fake) and a manifest of them (the test split)."""
    root = tmp_path_factory.mktemp("kill-data")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        fake = i % 2 == 1
        pixels = rng.integers(60, 200, size=(1, 1, 3)) + rng.normal(0, 12, size=(40, 48, 3))
        if fake:
            pixels[::2, ::2] += 25
        path = f"{'fake' if fake else 'real'}/{i:02d}.png"
        (root / path).parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / path)
        rows.append([path, int(fake), "test", "toy", "entire_synthesis" if fake else "", "", "", ""])
    columns = ["path", "label", "split", "dataset", "forgery_type", "family", "generator", "video_id"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model("clip-probe-tiny"), tmp_path_factory.mktemp("kill-ckpt") / "tiny")


def test_predict_killed_mid_write_resumes_to_the_uninterrupted_output(
    images: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from mfclip import Detector
    from mfclip.inference.predict import PredictOptions, predict_files, read_rows

    inputs = [images / "real", images / "fake"]
    reference = tmp_path / "reference.csv"
    detector = Detector.from_pretrained(checkpoint, device="cpu")
    options = PredictOptions(progress=False, resume=True, batch_size=2, num_workers=0)
    predict_files(detector, inputs, reference, options)
    out = tmp_path / "scores.csv"
    for kill in _kill_points("predict", appends=5):  # 6 batches of 2
        _killed_run("predict", kill, checkpoint=checkpoint, inputs=inputs, out=out)
        assert (tmp_path / "scores.csv.lock").exists()  # the killed run never released it
    summary = predict_files(detector, inputs, out, options)
    assert summary.skipped > 0 and summary.skipped + summary.written == 12
    assert read_rows(out) == read_rows(reference)


def test_evaluate_killed_mid_log_and_before_its_files_resumes_to_the_same_predictions(
    images: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from mfclip.engine.evaluate import evaluate
    from mfclip.metrics import load_predictions

    manifest = images / "manifest.csv"
    reference = evaluate(
        checkpoint,
        manifest=manifest,
        out_dir=tmp_path / "ref",
        batch_size=3,
        workers=0,
        plots=False,
        progress=False,
    )
    out = tmp_path / "eval"
    # 4 appends of 3 scores; then the files of the test set, of the run (4 atomic writes or more).
    for kill in _kill_points("evaluate", appends=4, replaces=4):
        _killed_run("evaluate", kill, checkpoint=checkpoint, manifest=manifest, out=out)
    result = evaluate(
        checkpoint, manifest=manifest, out_dir=out, batch_size=3, workers=0, plots=False, progress=False
    )
    pd.testing.assert_frame_equal(
        load_predictions(out / "test" / "predictions.parquet"),
        load_predictions(tmp_path / "ref" / "test" / "predictions.parquet"),
    )
    assert result.metrics["test"]["overall"] == reference.metrics["test"]["overall"]
    assert not (out / "test" / ".partial").exists() and not list(out.rglob("*.tmp"))


def test_preprocess_killed_mid_log_and_before_its_manifest_resumes_to_the_same_crops(
    images: Path, tmp_path: Path
) -> None:
    from mfclip.face.pipeline import PreprocessConfig, preprocess

    config = {"detector": "none", "size": 32, "workers": 1, "progress": False}
    inputs = [images / "real", images / "fake"]
    preprocess(inputs, tmp_path / "ref", PreprocessConfig(**config))
    out = tmp_path / "faces"
    # One log record per image (12) and per folder; then the manifests and the compacted log.
    for kill in _kill_points("preprocess", appends=12, replaces=3):
        _killed_run("preprocess", kill, inputs=inputs, out=out, config=config)
    result = preprocess(inputs, out, PreprocessConfig(**config))
    assert result.resumed > 0 and result.faces == 12

    def crops(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in (folder / "faces").rglob("*.png")}

    assert crops(out) == crops(tmp_path / "ref")
    assert (out / "manifest.csv").read_text() == (tmp_path / "ref" / "manifest.csv").read_text()
    assert not list(out.rglob("*.tmp"))  # nothing left of writes the kills cut short

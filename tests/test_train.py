"""Real training runs of the tiny MFCLIP through the production entry points, on a toy data set.

The ``tiny`` preset is shrunk with overrides (32 px, one-layer towers, batch 8). One CLI run trains both
variants of a protocol; a second run of one variant is interrupted and resumed and must end with exactly
the weights of the uninterrupted run.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.engine.train import TrainingInterrupted, train_from_args
from mfclip.models.checkpoint import load_checkpoint
from train_toy import SMALL, write_toy_dataset, write_toy_protocol

# Two epochs of four batches of 4 (18 rows of a variant), two accumulated per optimizer step (an effective
# batch of 8): 4 steps, last.ckpt after every step.
RUN = [
    *SMALL,
    "data.batch_size=4",
    "trainer.accumulate_grad_batches=2",
    "trainer.max_epochs=2",
    "trainer.checkpoint_every_n_steps=1",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, {"train": 12, "val": 8, "test": 2})
    return write_toy_protocol(root / "protocol.yaml")


@pytest.fixture(scope="module")
def variant_runs(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mfclip train --protocol P` without --variant: one run per variant under one parent directory."""
    parent = tmp_path_factory.mktemp("runs") / "toy"
    code = run_app(app, ["train", "--config", "tiny", "--protocol", str(toy), "--out", str(parent), *RUN])
    assert code == 0
    return parent


def test_cli_trains_every_variant_into_a_complete_run_directory(variant_runs: Path) -> None:
    listing = json.loads((variant_runs / "variants.json").read_text())
    assert [v["variant"] for v in listing] == ["sdxl", "diffface"]
    assert all(v["status"] == "completed" for v in listing)
    for variant in ("sdxl", "diffface"):
        run = variant_runs / variant
        for name in ("config.yaml", "env.json", "data.json", "train_summary.json", "checkpoints/last.ckpt"):
            assert (run / name).is_file(), name
        summary = json.loads((run / "train_summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 4 and summary["epochs"] == 2
        assert summary["best_checkpoint"] == "checkpoints/best.ckpt" and summary["best_dir"] == "best"
        assert summary["best_val_auc"] > 0.75  # the checkerboard trace is easy to learn
        env = json.loads((run / "env.json").read_text())
        assert env["packages"]["torch"] and env["packages"]["lightning"] and env["seed"] == 0
        assert env["argv"] and env["hostname"] and "git" in env
        data = json.loads((run / "data.json").read_text())
        assert data["variant"] == variant and data["val"] == {"rows": 12, "real": 8, "fake": 4}

        # The exported best model loads and scores images; its card says what it was trained on.
        model, metadata = load_checkpoint(run / "best")
        p_fake = model.predict_proba(torch.rand(3, 3, 32, 32))
        assert p_fake.shape == (3,) and bool(((p_fake >= 0) & (p_fake <= 1)).all())
        assert metadata.protocol is not None and metadata.protocol.variant == variant
        assert metadata.synthetic is True and metadata.prompt_set is not None
        assert metadata.metrics["val"]["auc"] == pytest.approx(summary["best_val_auc"])  # type: ignore[index]
        assert metadata.epochs == summary["best_epoch"]
        assert "Trained on synthetic data" in (run / "best" / "README.md").read_text()
        # The Lightning checkpoints are self-describing too.
        from_lightning, _ = load_checkpoint(run / "checkpoints" / "best.ckpt")
        for key, value in model.state_dict().items():
            assert torch.equal(value, from_lightning.state_dict()[key]), key

        metrics = pd.read_csv(run / "logs" / "csv" / "metrics.csv")
        for column in ("train/loss_step", "train/ce", "train/cmc", "train/kl", "val/auc", "val/loss"):
            assert metrics[column].notna().any(), column
        assert metrics["val/auc"].notna().sum() == 2  # one validation per epoch


class StopAtStep(L.Callback):
    """Presses Ctrl-C before the last batch of optimizer step ``step + 1``: mid gradient accumulation."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        last_of_step = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if trainer.global_step == self.step and last_of_step:
            raise KeyboardInterrupt


def test_interrupted_run_keeps_its_checkpoint_and_resumes_exactly(
    toy: Path, variant_runs: Path, tmp_path: Path
) -> None:
    run = tmp_path / "interrupted"
    handler = signal.getsignal(signal.SIGINT)
    # Ctrl-C halfway through step 4 of 4 (its first batch is accumulated, its second not yet run): the last
    # checkpoint is the one written after step 3, and the resumed run redoes the whole of step 4.
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train_from_args(
            "tiny", RUN, protocol=str(toy), variant="sdxl", out=str(run), callbacks=[StopAtStep(3)]
        )
    assert signal.getsignal(signal.SIGINT) is handler
    assert json.loads((run / "train_summary.json").read_text())["status"] == "interrupted"
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 3
    load_checkpoint(last)  # the interrupted run's checkpoint is intact and loadable

    assert run_app(app, ["train", "--resume", str(run)]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == str(last)
    reference = variant_runs / "sdxl"
    resumed = torch.load(last, weights_only=True)["state_dict"]
    straight = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)
    expected = json.loads((reference / "train_summary.json").read_text())
    assert summary["best_val_metrics"] == pytest.approx(expected["best_val_metrics"], abs=1e-6)
    assert summary["global_step"] == expected["global_step"] == 4
    assert (run / "best" / "model.safetensors").is_file()


def test_damaged_last_checkpoint_is_one_line_and_an_earlier_one_resumes_exactly(
    toy: Path, variant_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "damaged"
    with pytest.raises(TrainingInterrupted):
        train_from_args(
            "tiny", RUN, protocol=str(toy), variant="sdxl", out=str(run), callbacks=[StopAtStep(3)]
        )
    checkpoints = run / "checkpoints"
    assert (checkpoints / "step-2.ckpt").is_file()  # the previous last.ckpt, kept
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4096])  # e.g. a disk that filled up while copying the run

    capsys.readouterr()
    assert run_app(app, ["train", "--resume", str(run)]) == 2
    first, *rest = capsys.readouterr().err.splitlines()
    assert first.startswith(f"mfclip: error: {last}: truncated")
    assert first.endswith(f"--resume {run} --resume-from step-2")
    assert all("MFCLIP_DEBUG" in line for line in rest)

    assert run_app(app, ["train", "--resume", str(run), "--resume-from", "step-2"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == str(checkpoints / "step-2.ckpt")
    resumed = torch.load(last, weights_only=True)["state_dict"]
    straight = torch.load(variant_runs / "sdxl" / "checkpoints" / "last.ckpt", weights_only=True)[
        "state_dict"
    ]
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)


class RecordPrecision(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.precision = trainer.precision


def test_bf16_early_stopping_and_tensorboard(toy: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "bf16"
    # No AUC can improve by more than 1, so the second validation stops the run (patience 1).
    options = [
        *(o for o in SMALL if o != "logging.tensorboard=false"),
        "trainer.max_epochs=3",
        "trainer.precision=bf16-mixed",
        "trainer.early_stopping={patience: 1, min_delta: 1.0}",
        "logging.tensorboard=true",
    ]
    precision = RecordPrecision()
    (result,) = train_from_args(
        "tiny", options, protocol=str(toy), variant="sdxl", out=str(run), callbacks=[precision]
    )
    assert precision.precision == "bf16-mixed"
    assert result.status == "completed" and result.stopped_early
    assert result.epochs == 2 and result.global_step == 4
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "best" / "model.safetensors").is_file()


def test_unreadable_images_are_counted_and_listed_once_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    manifest = write_toy_dataset(root, {"train": 4, "val": 2})
    rows = pd.read_csv(manifest)
    train_paths = rows.loc[rows["split"] == "train", "path"].tolist()
    val_path = rows.loc[rows["split"] == "val", "path"].tolist()[0]
    broken = {train_paths[1]: b"", train_paths[5]: (root / train_paths[5]).read_bytes()[:40]}  # cut short
    broken[val_path] = b"not an image"
    for path, data in broken.items():
        (root / path).write_bytes(data)
    # Two epochs: each broken training file is met (and replaced) every epoch, but listed once.
    options = [*SMALL, "data.batch_size=4", "trainer.max_epochs=2"]
    argv = ["train", "--config", "tiny", "--manifest", str(manifest), "--out", str(tmp_path / "run")]
    assert run_app(app, [*argv, *options]) == 0
    assert "3 unreadable image(s) skipped" in capsys.readouterr().out
    corrupt = json.loads((tmp_path / "run" / "train_summary.json").read_text())["corrupt_files"]
    assert corrupt["count"] == 3
    assert sorted(f["path"] for f in corrupt["train"]) == sorted(train_paths[i] for i in (1, 5))
    assert [(f["path"], f["index"]) for f in corrupt["val"]] == [
        (val_path, int(rows.index[rows["path"] == val_path][0]))
    ]
    reasons = {f["path"]: f["reason"] for f in corrupt["train"] + corrupt["val"]}
    assert reasons[train_paths[1]] == "empty file (0 bytes)"
    assert reasons[train_paths[5]] == reasons[val_path] == "not a recognised image format"

"""Training configuration, data resolution, sampling and schedule: everything of training short of a run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.data.manifest import ManifestError
from mfclip.engine.callbacks import AtomicCheckpointIO
from mfclip.engine.config import DataSection, TrainConfig, list_train_presets, load_train_config
from mfclip.engine.datamodule import EpochSampler, SamplingPosition, resolve_rows
from mfclip.engine.module import step_decay_schedule
from mfclip.engine.train import compose_config, train
from mfclip.models.readers import CheckpointError, file_record, verify_sidecar
from mfclip.utils.config import ConfigError
from train_toy import write_toy_dataset, write_toy_protocol


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, {"train": 4, "val": 2, "test": 2}, size=8)
    write_toy_protocol(root / "protocol.yaml")
    return root


# ---- configs --------------------------------------------------------------------------------------------


def test_presets_load_and_default_follows_the_paper() -> None:
    assert {"default", "tiny", "demo"} <= set(list_train_presets())
    for name in list_train_presets():
        assert isinstance(load_train_config(name), TrainConfig)
    default = load_train_config("default")
    assert default.model.name == "mfclip-vit-b16"
    optim = default.optim
    assert (optim.name, optim.lr, optim.lr_pretrained, optim.weight_decay) == ("adam", 1e-4, 1e-5, 1e-3)
    assert (optim.step_size_epochs, optim.gamma) == (15, 0.1)
    assert load_train_config("tiny").model.name == "mfclip-tiny"


def test_misspelt_override_names_the_closest_key() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch.*did you mean 'max_epochs'"):
        load_train_config("tiny", ["trainer.max_epoch=3"])
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_train_config("tiny", ["data.batchsize=3"])


def test_bad_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_train_config("tiny", ["data.batch_size=many"])
    with pytest.raises(ConfigError, match=r"trainer\.precision"):
        load_train_config("tiny", ["trainer.precision=64"])
    with pytest.raises(ConfigError, match=r"optim\.betas"):
        load_train_config("tiny", ["optim.betas=[0.9,1.5]"])
    with pytest.raises(ConfigError, match="never end"):
        load_train_config("tiny", ["trainer.max_epochs=-1"])
    with pytest.raises(ConfigError, match=r"data\.variant needs data\.protocol"):
        DataSection.from_dict({"variant": "t2i"})


def test_unknown_preset_suggests_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_train_config("tiyn")
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")


def test_experiment_presets_load_by_name() -> None:
    config = load_train_config("fle-l1-l2")
    assert config.model.overrides["text.levels"] == [1, 2]
    assert load_train_config("experiments/spa-none").model.overrides
    with pytest.raises(ConfigError, match="did you mean 'spa-none'"):
        load_train_config("spa-nnoe")


def test_cli_reports_config_errors_and_prints_the_resolved_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_app(app, ["train", "--config", "tiny", "trainer.max_epoch=3"]) == 2
    assert "did you mean 'max_epochs'" in capsys.readouterr().err
    code = run_app(app, ["train", "-c", "tiny", "--print-config", "--manifest", "m.csv", "data.batch_size=5"])
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["manifest"] == "m.csv" and printed["data"]["batch_size"] == 5
    assert TrainConfig.from_dict(printed) == load_train_config(
        "tiny", ["data.manifest=m.csv", "data.batch_size=5"]
    )


def test_print_config_checks_the_protocol_and_the_model_as_training_would(
    capsys: pytest.CaptureFixture[str], toy: Path
) -> None:
    misspelt = _protocol(toy, "misspelt", {"train": {"split": "train"}, "tset": {"a": {"split": "test"}}})
    assert run_app(app, ["train", "-c", "tiny", "--protocol", misspelt, "--print-config"]) == 2
    assert "unknown key 'tset'; did you mean 'test'?" in capsys.readouterr().err
    bad_model = ["train", "-c", "tiny", "--manifest", "m.csv", "--print-config", "model.overrides.spa.mdoe=x"]
    assert run_app(app, bad_model) == 2
    assert "unknown key 'spa.mdoe'; did you mean 'mode'?" in capsys.readouterr().err


def test_a_bundled_protocol_without_data_dir_asks_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["train", "--config", "tiny", "--protocol", "synthetic"]) == 2
    assert (
        "protocol 'synthetic' needs --data-dir DIR (the folder holding manifest.csv)"
        in capsys.readouterr().err
    )


def test_only_rank_zero_reports_the_finished_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    import mfclip.engine.train as engine

    finished = SimpleNamespace(
        best_val_auc=0.9,
        variant=None,
        status="completed",
        global_step=4,
        epochs=2,
        run_dir=tmp_path,
        summary={},
    )
    finished.best_checkpoint_dir = tmp_path / "best"
    monkeypatch.setattr(engine, "train_from_args", lambda *args, **kwargs: [finished])
    for variable in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(variable, raising=False)
    for rank, reported in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        assert run_app(app, ["train", "-c", "tiny", "--manifest", "m.csv"]) == 0
        assert ("completed: 4 steps, 2 epochs, best val AUC 0.9000" in capsys.readouterr().out) is reported


def test_resume_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such run directory"):
        compose_config(resume=tmp_path / "nowhere")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match=r"no checkpoints/ folder to resume from"):
        compose_config(resume=run)
    (run / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match=r"last\.ckpt: missing; no other readable checkpoint"):
        compose_config(resume=run)
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "epoch": 0}, run / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text(load_train_config("tiny").to_yaml())
    with pytest.raises(ConfigError, match="--resume-from needs --resume RUN"):
        compose_config(resume_from="best")
    with pytest.raises(ConfigError, match="drop --config"):
        compose_config("tiny", resume=run)
    assert compose_config(resume=run, overrides=["trainer.max_epochs=9"]).trainer.max_epochs == 9
    # A directory that already holds a run is not silently overwritten.
    config = load_train_config("tiny", [f"output.run_dir={run}", "data.manifest=unused.csv"])
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(config)


def test_missing_optional_logger_package_is_a_clear_error(tmp_path: Path) -> None:
    import importlib.util

    from mfclip.engine.train import build_loggers

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    config = load_train_config("tiny", ["logging.wandb=true"])
    with pytest.raises(ConfigError, match="pip install wandb"):
        build_loggers(config, tmp_path)


# ---- data -----------------------------------------------------------------------------------------------


def test_manifest_rows_by_split(toy: Path) -> None:
    rows = resolve_rows(DataSection(manifest=str(toy / "manifest.csv")))
    assert set(rows.train["split"]) == {"train"} and set(rows.val["split"]) == {"val"}
    assert (len(rows.train), len(rows.val)) == (8, 4)
    assert rows.train_root == toy and rows.datasets == ["toy"] and not rows.synthetic


def test_protocol_variants_select_rows(toy: Path) -> None:
    protocol = str(toy / "protocol.yaml")
    rows = resolve_rows(DataSection(protocol=protocol, variant="sdxl"))
    fakes = rows.train[rows.train["label"] == 1]
    assert set(fakes["generator"]) == {"SDXL"} and set(rows.val["split"]) == {"val"}
    assert rows.synthetic and rows.variant == "sdxl" and rows.protocol.name == "toy-cross-generator-sdxl"
    with pytest.raises(ConfigError, match=r"no variant 'sdlx'.*diffface"):
        resolve_rows(DataSection(protocol=protocol, variant="sdlx"))
    config = load_train_config("tiny", [f"data.protocol={protocol}"])
    with pytest.raises(ConfigError, match="defines variants"):
        train(config)


def _protocol(toy: Path, name: str, body: dict) -> str:
    path = toy / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "manifest": "manifest.csv", **body}))
    return str(path)


def test_protocol_validation(toy: Path) -> None:
    misspelt = _protocol(
        toy, "misspelt", {"train": {"split": "train", "generators": ["SDLX"]}, "val": {"split": "val"}}
    )
    with pytest.raises(
        ManifestError, match=r"protocol 'misspelt': train\.generators: 'SDLX' does not occur.*SDXL"
    ):
        resolve_rows(DataSection(protocol=misspelt))
    leaky = _protocol(toy, "leaky", {"train": {"split": "train"}, "val": {"split": ["train", "val"]}})
    with pytest.raises(ConfigError, match="both the train and the val rows"):
        resolve_rows(DataSection(protocol=leaky))
    one_class = _protocol(
        toy, "realval", {"train": {"split": "train"}, "val": {"split": "val", "include_fake": False}}
    )
    with pytest.raises(ConfigError, match="val rows are all real"):
        resolve_rows(DataSection(protocol=one_class))
    with pytest.raises(ConfigError, match="must not select the test split"):
        resolve_rows(
            DataSection(
                protocol=_protocol(toy, "peek", {"train": {"split": "train"}, "val": {"split": "test"}})
            )
        )
    with pytest.raises(ConfigError, match="no 'val' selector"):
        resolve_rows(DataSection(protocol=_protocol(toy, "noval", {"train": {"split": "train"}})))
    with pytest.raises(ConfigError, match=r"set data\.protocol or data\.manifest"):
        resolve_rows(DataSection())


# ---- sampling and schedule ------------------------------------------------------------------------------


def test_sampler_shards_one_global_order_and_resumes_mid_epoch() -> None:
    position = SamplingPosition()
    single = EpochSampler(20, 4, seed=3, position=position)
    ranks = [EpochSampler(20, 2, seed=3, position=position, rank=r, world_size=2) for r in (0, 1)]
    first = list(single)
    assert sorted(k[0] for k in first) == list(range(20))
    # Two processes with batch 2 see exactly the samples (and augmentation seeds) of one with batch 4.
    for batch in range(5):
        together = sorted(list(rank)[batch * 2 + i] for rank in ranks for i in range(2))
        assert together == sorted(first[batch * 4 : batch * 4 + 4])
    position.batches_done = 3
    assert list(single) == first[12:]
    position.epoch, position.batches_done = 1, 0
    second = list(single)
    assert second != first and sorted(k[0] for k in second) == list(range(20))
    balanced = EpochSampler(
        20, 4, seed=3, position=position, weights=np.r_[np.full(2, 0.25), np.full(18, 0.5 / 18)]
    )
    drawn = np.array([k[0] for k in balanced])
    assert 4 <= (drawn < 2).sum() <= 16  # the two rare rows get about half of the draws
    with pytest.raises(ConfigError, match="fewer than one batch"):
        EpochSampler(5, 4, seed=0, position=position, world_size=2)


def test_step_decay_schedule_warms_up_and_decays_at_epoch_boundaries() -> None:
    factor = step_decay_schedule(warmup_steps=4, step_size_epochs=2, gamma=0.1, steps_per_epoch=lambda: 10)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(19) == pytest.approx(1.0) and factor(20) == pytest.approx(0.1)
    assert factor(39) == pytest.approx(0.1) and factor(40) == pytest.approx(0.01)
    plain = step_decay_schedule(0, 15, 0.1, lambda: 3)
    assert plain(0) == 1.0 and plain(44) == 1.0 and plain(45) == pytest.approx(0.1)


def test_atomic_checkpoint_io_keeps_the_previous_file_when_a_save_fails(tmp_path: Path) -> None:
    class Unpicklable:
        def __reduce__(self):  # fails half-way through writing the new checkpoint
            raise RuntimeError("disk full")

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"weights": torch.arange(1000.0)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"weights": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(1000.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.integrity.json"]
    verify_sidecar(path)  # the record still describes the surviving file


# ---- checkpoint integrity and choosing the one to resume from ------------------------------------------


def write_run_checkpoints(run: Path, steps: list[int]) -> Path:
    """A run directory whose last.ckpt was saved at each of ``steps`` in turn (one step-N.ckpt kept)."""
    from mfclip.engine.checkpoints import keep_as_step_checkpoint

    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    (run / "config.yaml").write_text("{}")
    io = AtomicCheckpointIO()
    for step in steps:
        keep_as_step_checkpoint(checkpoints / "last.ckpt", keep=1)
        io.save_checkpoint(
            {"global_step": step, "epoch": 0, "w": torch.full((64,), float(step))}, checkpoints / "last.ckpt"
        )
    io.save_checkpoint({"global_step": steps[0], "epoch": 0, "w": torch.zeros(64)}, checkpoints / "best.ckpt")
    return checkpoints


def test_checkpoints_carry_an_integrity_record_and_earlier_ones_are_kept(tmp_path: Path) -> None:
    checkpoints = write_run_checkpoints(tmp_path / "run", [2, 4, 6])
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == [
        "best.ckpt",
        "best.ckpt.integrity.json",
        "last.ckpt",
        "last.ckpt.integrity.json",
        "step-4.ckpt",
        "step-4.ckpt.integrity.json",
    ]
    record = json.loads((checkpoints / "last.ckpt.integrity.json").read_text())
    assert record == {
        "file": "last.ckpt",
        **file_record(checkpoints / "last.ckpt"),
        "global_step": 6,
        "epoch": 0,
    }
    assert torch.load(checkpoints / "step-4.ckpt", weights_only=True)["w"][0] == 4  # the old file, intact
    verify_sidecar(checkpoints / "step-4.ckpt")


@pytest.mark.parametrize("damage", ["truncated", "tainted", "missing"])
def test_a_damaged_last_checkpoint_names_the_newest_readable_one(tmp_path: Path, damage: str) -> None:
    from mfclip.engine.train import resolve_resume

    run = tmp_path / "run"
    checkpoints = write_run_checkpoints(run, [2, 4, 6])
    last = checkpoints / "last.ckpt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:300])
        expected = "truncated"
    elif damage == "tainted":  # a pickle that would run code, with its record removed too
        (checkpoints / "last.ckpt.integrity.json").unlink()
        torch.save({"global_step": 6, "payload": os.system}, last)
        expected = "cannot be loaded safely"
    else:
        last.unlink()
        expected = "missing"
    with pytest.raises(CheckpointError) as err:
        resolve_resume(run)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{last}: ") and expected in message
    assert message.endswith(
        f"resume from the newest readable checkpoint (step 4) with --resume {run} --resume-from step-4"
    )
    assert resolve_resume(run, "step-4").checkpoint == checkpoints / "step-4.ckpt"
    assert resolve_resume(run, "best").checkpoint == checkpoints / "best.ckpt"
    assert resolve_resume(checkpoints / "step-4.ckpt").run_dir == run
    with pytest.raises(CheckpointError, match="expected last, best or step-N"):
        resolve_resume(run, "newest")


def test_lightning_package_tips_are_filtered_and_run_notices_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from mfclip.engine.train import _quiet_known_warnings

    def messages() -> str:
        caplog.clear()
        L.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", limit_train_batches=1.0, max_epochs=1)
        return "\n".join(caplog.messages)

    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        unfiltered = messages()
        with _quiet_known_warnings():
            filtered = messages()
    assert "Tip:" in unfiltered and "was configured so" in unfiltered
    assert "Tip:" not in filtered and "was configured so" not in filtered
    assert "GPU available" in filtered


def test_resuming_after_a_damaged_last_checkpoint_keeps_the_readable_ones(tmp_path: Path) -> None:
    """A run resumed from step-4 because last.ckpt (step 6) is damaged: its next save must not keep the
    damaged file as step-6.ckpt and prune step-4.ckpt (nothing readable would be left if that save failed)."""
    from mfclip.engine.callbacks import AtomicCheckpointIO
    from mfclip.engine.checkpoints import checkpoint_problem, keep_as_step_checkpoint

    checkpoints = write_run_checkpoints(tmp_path / "run", [2, 4, 6])
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:300])
    keep_as_step_checkpoint(last, keep=1)  # the resumed run's first save, at step 5
    AtomicCheckpointIO().save_checkpoint({"global_step": 5, "epoch": 0, "w": torch.zeros(64)}, last)
    assert not (checkpoints / "step-6.ckpt").exists()
    assert checkpoint_problem(checkpoints / "step-4.ckpt") is None
    keep_as_step_checkpoint(last, keep=1)  # the next save keeps the good step 5 in place of step 4
    assert [p.name for p in sorted(checkpoints.glob("step-*.ckpt"))] == ["step-5.ckpt"]


def test_a_step_checkpoint_deleted_by_hand_leaving_its_record_does_not_stop_training(tmp_path: Path) -> None:
    """``rm checkpoints/step-*.ckpt`` to free disk leaves the records; reaching that step again keeps it."""
    from mfclip.engine.callbacks import AtomicCheckpointIO
    from mfclip.engine.checkpoints import keep_as_step_checkpoint

    checkpoints = write_run_checkpoints(tmp_path / "run", [2, 4, 6])
    (checkpoints / "step-4.ckpt").unlink()
    last = checkpoints / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 4, "epoch": 0, "w": torch.ones(64)}, last)
    keep_as_step_checkpoint(last, keep=1)
    verify_sidecar(checkpoints / "step-4.ckpt")
    assert torch.load(checkpoints / "step-4.ckpt", weights_only=True)["w"][0] == 1

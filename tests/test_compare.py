"""Experiment presets, config resolution, and `mfclip compare` end to end on a tiny SYNTHETIC benchmark."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from mfclip.engine.compare import CompareEntry, compare, experiment_path, list_experiments, resolve_entry
from mfclip.engine.config import load_train_config
from mfclip.models.registry import create_model, get_model_config
from mfclip.prompts import CONTEXT_LENGTH, END_OF_TEXT, NUM_LEVELS
from mfclip.utils.config import ConfigError

# Each switch of SPEC §5 and the override its experiment sets (the full model is the reference row).
ABLATIONS = {
    "fle-l1": {"text.levels": [1]},
    "fle-l1-l2": {"text.levels": [1, 2]},
    "fle-l1-l3": {"text.levels": [1, 2, 3]},
    "pooling-concat-last": {"text.pooling": "concat_last"},
    "pooling-concat-first": {"text.pooling": "concat_first"},
    "pooling-learned-fusion": {"text.level_fusion": "learned"},
    "mve-image-only": {"vision.noise_branch": False},
    "mve-noise-only": {"vision.image_branch": False},
    "patch-random": {"vision.noise.patch_mode": "random"},
    "patch-whole": {"vision.noise.patch_mode": "whole"},
    "spa-matrix": {"spa.mode": "matrix"},
    "spa-none": {"spa.mode": "none"},
    "loss-no-cmc": {"losses.cmc": 0.0},
    "loss-no-kl": {"losses.kl": 0.0},
    "loss-ce-only": {"losses.cmc": 0.0, "losses.kl": 0.0},
    "fusion-concat": {"vision.fusion": "concat"},
    "global-cvit": {"vision.global_branch": "cvit"},
    "mfclip-full": {},
}


def test_every_switch_has_an_experiment_preset() -> None:
    assert set(ABLATIONS) <= set(list_experiments())


@pytest.mark.parametrize("name", list_experiments())
def test_experiment_presets_validate_and_build_their_model_shrunk_to_tiny(name: str) -> None:
    config = load_train_config(experiment_path(name))
    get_model_config(config.model.name, **config.model.overrides)  # the full-size model config is valid
    if name in ABLATIONS:
        assert config.model.name == "mfclip-vit-b16" and config.model.overrides == ABLATIONS[name]
        assert (
            config.optim.lr == 1e-4
            and config.optim.weight_decay == 1e-3
            and config.optim.step_size_epochs == 15
        )
    if not config.model.name.startswith("mfclip-"):
        return
    # The same switches on the tiny model: it builds, runs forward and computes every enabled loss.
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **config.model.overrides).train()
    images = torch.rand(4, 3, 64, 64)
    tokens = torch.randint(1, 400, (4, NUM_LEVELS, CONTEXT_LENGTH))
    tokens[..., -1] = END_OF_TEXT  # every prompt ends as the tokenizer ends it
    mask = torch.ones(4, NUM_LEVELS, dtype=torch.bool)
    output = model(images, tokens, mask) if model.uses_text() else model(images)
    losses = model.compute_loss(output, torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(losses["loss"])
    assert ("cmc" in losses) == (config.model.overrides.get("losses.cmc", 1.0) > 0)
    assert ("kl" in losses) == (config.model.overrides.get("losses.kl", 1.0) > 0)


def test_configs_resolve_from_files_presets_experiments_and_models(tmp_path: Path) -> None:
    assert resolve_entry("tiny").label == "tiny"
    assert resolve_entry("fle-l1").config.endswith("experiments/fle-l1.yaml")
    assert resolve_entry("experiments/spa-none").label == "spa-none"
    model = resolve_entry("cnn-tiny", base="tiny")
    assert model == CompareEntry("cnn-tiny", "tiny", ("model.name=cnn-tiny",))
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: mfclip-tiny}\n", encoding="utf-8")
    assert resolve_entry(str(path)) == CompareEntry("mine", str(path))
    with pytest.raises(ConfigError, match=r"'fle-l2' is not a config file.*did you mean 'fle-l1'"):
        resolve_entry("fle-l2")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mfclip.data.synth import generate_benchmark

    out = tmp_path_factory.mktemp("synth")
    return generate_benchmark(out, seed=1, size=120, image_size=32, workers=1, progress=False).protocol_path


FAST = [
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logging.tensorboard=false",
    "data.num_workers=0",
    "data.batch_size=16",
]


def test_compare_trains_evaluates_and_tabulates_then_reuses_everything(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    options = {"base": "tiny", "out_dir": out, "workers": 0, "plots": False, "progress": False}
    result = compare(["clip-probe-tiny", "clip-finetune-tiny"], synthetic, overrides=FAST, **options)
    assert [r.label for r in result.runs] == ["clip-probe-tiny", "clip-finetune-tiny"]
    assert {r.status for r in result.runs} == {"trained"}
    for run in result.runs:
        assert (run.run_dir / "best" / "config.json").is_file()
        assert (run.run_dir / "eval" / "unseen" / "predictions.parquet").is_file()
    table = result.table
    overall = table[(table["level"] == "frame") & (table["group_by"] == "")]
    assert overall["test_set"].tolist() == ["seen", "unseen"]
    assert overall[["clip-probe-tiny", "clip-finetune-tiny"]].notna().all().all()
    generators = table[table["group_by"] == "generator"]
    assert {"SynthDiff-A", "SynthGAN-B"} <= set(generators["group"])
    markdown = result.markdown_path.read_text(encoding="utf-8")
    assert "| seen |" in markdown and "AP by run" in markdown and "EER by run" in markdown
    assert "clip-probe-tiny" in markdown and "Per generator" in markdown
    csv = pd.read_csv(result.csv_path)
    assert set(csv["metric"]) == {"auc", "ap", "eer"}
    assert list(csv.columns[:5]) == ["metric", "test_set", "level", "group_by", "group"]

    # A run's checkpoint alone is evaluated on the data its training used (RUN/config.yaml): here that
    # is the comparison's own evaluation, so nothing is scored again.
    from mfclip.engine.evaluate import evaluate

    alone = evaluate(result.runs[0].run_dir / "best", workers=0, plots=False, progress=False)
    assert alone.out_dir == result.runs[0].run_dir / "eval" and alone.resumed == ["seen", "unseen"]

    # A rerun trains and scores nothing: the runs and their evaluations are reused.
    import mfclip.engine.train as train_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    again = compare(["clip-probe-tiny", "clip-finetune-tiny"], synthetic, overrides=FAST, **options)
    assert {r.status for r in again.runs} == {"reused"}
    pd.testing.assert_frame_equal(again.table, result.table)
    # Other training settings for the same run directory are refused, not silently mixed in.
    with pytest.raises(ConfigError, match=r"trained with other settings \(optim\.lr\)"):
        compare(["clip-probe-tiny"], synthetic, overrides=[*FAST, "optim.lr=0.5"], **options)


def test_compare_needs_configs_and_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one config"):
        compare([], "synthetic", out_dir=tmp_path)
    with pytest.raises(ConfigError, match="give a protocol"):
        compare(["tiny"], out_dir=tmp_path)

"""Experiment presets, config resolution, and `mfclip compare` end to end on a tiny SYNTHETIC benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

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


def test_compare_over_seeds_reports_mean_sd_and_paired_differences_and_resumes(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mfclip.engine.train as train_module

    out = tmp_path / "seeds"
    options = {"base": "tiny", "out_dir": out, "workers": 0, "plots": False, "progress": False}
    configs = ["clip-probe-tiny", "clip-finetune-tiny"]
    result = compare(
        configs, synthetic, overrides=FAST, seeds=[0, 1], reference="clip-probe-tiny", bootstrap=20, **options
    )
    labels = [r.label for r in result.runs]
    assert labels == [f"{c}-seed{s}" for c in configs for s in (0, 1)]
    for run in result.runs:
        assert load_train_config(run.run_dir / "config.yaml").trainer.seed == run.seed
    # The seed changes training: the two probes' predictions differ.
    first, second = (
        pd.read_parquet(r.run_dir / "eval" / "seen" / "predictions.parquet") for r in result.runs[:2]
    )
    assert not np.allclose(first["p_fake"], second["p_fake"])

    stats = result.seed_tables["auc"]
    overall = stats[(stats["level"] == "frame") & (stats["group_by"] == "")].set_index(["test_set", "column"])
    assert list(dict.fromkeys(overall.index.get_level_values(0))) == ["seen", "unseen", "mean"]
    row = overall.loc[("seen", "clip-finetune-tiny")]
    seen = result.table[(result.table["test_set"] == "seen") & (result.table["level"] == "frame")]
    seen = seen[seen["group_by"] == ""].iloc[0]
    differences = [seen[f"clip-finetune-tiny-seed{s}"] - seen[f"clip-probe-tiny-seed{s}"] for s in (0, 1)]
    assert row["n"] == 2 and row["reference"] == "clip-probe-tiny"
    assert row["diff"] == pytest.approx(np.mean(differences))
    assert row["mean"] == pytest.approx(np.mean([seen[f"clip-finetune-tiny-seed{s}"] for s in (0, 1)]))
    assert result.seeds_csv_path == out / "seeds.csv" and set(pd.read_csv(out / "seeds.csv")["metric"]) == {
        "auc",
        "ap",
        "eer",
    }
    markdown = result.markdown_path.read_text(encoding="utf-8")
    assert "## AUC across seeds" in markdown and "Training seeds 0, 1" in markdown
    assert "| clip-finetune-tiny − clip-probe-tiny |" in markdown and "; images [" in markdown
    assert "## Every run" in markdown
    index = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert index["seeds"] == [0, 1] and index["runs"][1]["column"] == "clip-probe-tiny"

    # The same comparison written as a study, plus one more column: only that column's runs train.
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "tiny-study",
                "base": "tiny",
                "overrides": FAST,
                "seeds": [0, 1],
                "reference": "clip-probe-tiny",
                "columns": {"clip-probe-tiny": {}, "clip-finetune-tiny": {"config": "clip-finetune-tiny"}},
            }
        ),
        encoding="utf-8",
    )
    trained = []
    real_train = train_module.train

    def counting_train(config, **kwargs):
        trained.append(Path(config.output.run_dir).name)
        return real_train(config, **kwargs)

    monkeypatch.setattr(train_module, "train", counting_train)
    options.pop("base")
    again = compare(["cnn-tiny"], synthetic, study=study, **options)
    assert trained == ["cnn-tiny-seed0", "cnn-tiny-seed1"]
    assert [r.status for r in again.runs[:4]] == ["reused"] * 4 and again.reference == "clip-probe-tiny"
    assert load_train_config(out / "runs" / "cnn-tiny-seed1" / "config.yaml").trainer.max_epochs == 1
    pd.testing.assert_frame_equal(again.tables["auc"][labels], result.tables["auc"][labels])
    assert "Study `tiny-study`." in again.markdown_path.read_text(encoding="utf-8")


def test_seeds_are_checked(synthetic: Path, tmp_path: Path) -> None:
    from mfclip.engine.compare import parse_seeds

    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0-1, 5") == [0, 1, 5]
    with pytest.raises(ConfigError, match=r"--seeds: 'x' is not a seed"):
        parse_seeds("0,x")
    with pytest.raises(ConfigError, match="--seeds: '3-1'"):
        parse_seeds("3-1")
    kwargs = {"out_dir": tmp_path, "base": "tiny"}
    with pytest.raises(ConfigError, match="repeats a seed"):
        compare(["clip-probe-tiny"], synthetic, seeds=[0, 0], **kwargs)
    with pytest.raises(ConfigError, match="either as seeds"):
        compare(["clip-probe-tiny"], synthetic, seeds=[0], overrides=["trainer.seed=3"], **kwargs)
    with pytest.raises(
        ConfigError, match=r"reference 'clip-probe' is not one of the compared.*clip-probe-tiny"
    ):
        compare(["clip-probe-tiny"], synthetic, seeds=[0], reference="clip-probe", **kwargs)


def test_studies_load_and_every_column_builds_its_model() -> None:
    from mfclip.engine.compare import list_studies, load_study

    assert list_studies()
    for name in list_studies():
        study = load_study(name)
        entries = study.entries()
        assert [e.label for e in entries] == list(study.columns)
        assert study.reference in study.columns and len(study.seeds or []) >= 3
        for entry in entries:
            config = load_train_config(entry.config, [*entry.overrides, *study.overrides])
            model = create_model(config.model.name, **config.model.overrides)
            assert model.image_size == 64, entry.label


def test_unknown_or_broken_studies_are_one_line_errors(tmp_path: Path) -> None:
    from mfclip.engine.compare import load_study

    with pytest.raises(ConfigError, match="unknown study 'nope'"):
        load_study("nope")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nreference: b\ncolumns: {a: {}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="reference 'b' is not one of its columns"):
        load_study(broken)
    broken.write_text("name: x\ncolumns: {a: {overides: []}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="overides"):
        load_study(broken)

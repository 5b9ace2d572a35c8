"""The offline demo end to end in --fast mode: data, two trainings, evaluation, report; then a resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import mfclip.engine.demo as demo_module
from mfclip.engine.demo import run_demo
from mfclip.utils.config import ConfigError


def test_fast_demo_runs_end_to_end_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(out, fast=True, workers=1, echo=lines.append)

    # Data, runs, evaluations, comparison and report are all there.
    assert (out / "data" / "manifest.csv").is_file() and (out / "data" / "protocol.yaml").is_file()
    for model in ("mfclip-tiny", "cnn-tiny"):
        run = out / "runs" / model
        assert (run / "best" / "config.json").is_file()
        for test_set in ("seen", "unseen"):
            assert (run / "eval" / test_set / "predictions.parquet").is_file()
        card = (run / "best" / "README.md").read_text(encoding="utf-8")
        assert "synthetic" in card.lower()
    assert list(result.summary.index) == ["seen", "unseen"]
    assert set(result.summary.columns.get_level_values("model")) == {"mfclip-tiny", "cnn-tiny"}
    assert result.summary.notna().all().all()
    report = result.report_path.read_text(encoding="utf-8")
    assert report.count("SYNTHETIC") >= 5 and "--fast smoke run" in report
    assert "| seen |" in report and "| unseen |" in report and "mfclip.Detector" in report
    for name in ("roc_seen.png", "roc_unseen.png", "auc_by_generator.png", "comparison.md", "comparison.csv"):
        assert (out / name).is_file(), name
    examples = result.examples
    assert set(examples["truth"]) == {"real", "seen fake", "unseen fake"}
    assert examples[["mfclip-tiny", "cnn-tiny"]].apply(lambda c: c.between(0, 1)).all().all()
    settings = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert settings["synthetic"] is True and settings["fast"] is True
    assert settings["from_scratch_seconds"] == settings["seconds"] and settings["seconds"]["total"] > 0
    assert "s from scratch" in report
    output = "\n".join(lines)
    assert "SYNTHETIC" in output and str(result.report_path) in output

    # A rerun trains and scores nothing again and reproduces the same tables.
    import mfclip.engine.train as train_module

    def no_training(*args, **kwargs):
        raise AssertionError("the demo retrained a finished run")

    monkeypatch.setattr(train_module, "train", no_training)
    monkeypatch.setattr(demo_module, "SLOW_SECONDS", 0.0)  # every run counts as slow: the note is printed
    lines.clear()
    again = run_demo(out, fast=True, workers=1, echo=lines.append)
    assert lines[-1].startswith("Note: this demo took") and "idle machine" in lines[-1]
    assert {run.status for run in again.comparison.runs} == {"reused"}
    pd.testing.assert_frame_equal(again.summary, result.summary)
    resumed = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert resumed["from_scratch_seconds"] == settings["seconds"]  # the timing of the real work is kept
    assert "this call resumed that work" in again.report_path.read_text(encoding="utf-8")


def test_demo_rejects_a_bad_baseline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown baseline model 'cnn-huge'"):
        run_demo(tmp_path, fast=True, baseline="cnn-huge")
    with pytest.raises(ConfigError, match="must differ"):
        run_demo(tmp_path, fast=True, baseline="mfclip-tiny")


def test_demo_refuses_an_out_folder_of_another_demo(tmp_path: Path) -> None:
    full = tmp_path / "full"
    (full / "data").mkdir(parents=True)
    (full / "data" / "synth.json").write_text(json.dumps({"seed": 0, "size": 3000, "image_size": 64}))
    with pytest.raises(
        ConfigError,
        match=rf"other settings \(size 3000.*use another --out, or delete {re.escape(str(full))}$",
    ):
        run_demo(full, fast=True)
    stray = tmp_path / "stray"
    (stray / "data").mkdir(parents=True)
    (stray / "data" / "notes.txt").write_text("not a benchmark")
    with pytest.raises(
        ConfigError,
        match=rf"holds files of another run.*use another --out, or delete {re.escape(str(stray))}$",
    ):
        run_demo(stray, fast=True)

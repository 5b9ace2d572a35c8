"""Evaluation files on disk, run reports, and `mfclip report` comparing runs from saved predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.metrics import (
    PredictionsError,
    compare_runs,
    evaluate_predictions,
    find_predictions,
    load_predictions,
    read_metrics,
    safe_name,
    write_evaluation,
    write_run_report,
)

GENERATORS = {"SDXL": "entire", "Midjourney": "entire", "DiffFace": "swap", "Imagic": "edit"}


def predictions(n: int, strength: float, seed: int, test_set: str | None = None) -> pd.DataFrame:
    """A predictions table of a detector whose separation of reals and fakes is ``strength``."""
    rng = np.random.default_rng(seed)
    video = np.arange(n) // 8
    labels = (video % 2).astype(np.int8)
    names = np.array(list(GENERATORS))
    generator = np.where(labels == 1, names[(video // 2) % 4], "")
    scores = np.clip(rng.normal(0.4 + strength * labels, 0.2), 0, 1).astype(np.float32)
    frame = pd.DataFrame(
        {
            "path": [f"faces/{i:05d}.png" for i in range(n)],
            "label": labels,
            "p_fake": scores,
            "dataset": "DiFF",
            "forgery_type": [GENERATORS.get(g, "") for g in generator],
            "family": np.where(labels == 1, "diffusion", ""),
            "generator": generator,
            "video_id": [f"vid{v:04d}" for v in video],
        }
    )
    if test_set is not None:
        frame["test_set"] = test_set
    return frame


def write_run(
    root: Path, strengths: dict[str, float], seed: int, fmt: str = "parquet", plots: bool = False
) -> Path:
    results = {}
    for offset, (test_set, strength) in enumerate(strengths.items()):
        frame = predictions(800, strength, seed + offset, test_set)
        results[test_set] = evaluate_predictions(frame, bootstrap=20)
        out_dir = root / "eval" / safe_name(test_set)
        write_evaluation(out_dir, frame, results[test_set], predictions_format=fmt, plots=plots)
    write_run_report(root / "eval", results, plots=plots)
    return root


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_evaluation_files(tmp_path: Path) -> None:
    frame = predictions(800, 0.3, seed=0, test_set="DiFF T2I")
    metrics = evaluate_predictions(frame, bootstrap=50)
    out = tmp_path / "eval" / safe_name("DiFF T2I")
    written = write_evaluation(out, frame, metrics)
    assert out.name == "DiFF_T2I"
    assert set(written) == {"predictions", "metrics", "report", "roc", "histogram"}
    assert sorted(p.name for p in out.iterdir()) == [
        "histogram.png",
        "metrics.json",
        "predictions.parquet",
        "report.md",
        "roc.png",
    ]
    saved = strict_json(out / "metrics.json")
    assert saved["test_set"] == "DiFF T2I"
    assert saved["overall"]["auc"] == pytest.approx(roc_auc_score(frame.label, frame.p_fake))
    assert saved["overall"]["ci"]["auc"][0] <= saved["overall"]["auc"] <= saved["overall"]["ci"]["auc"][1]
    assert set(saved["groups"]["generator"]) == set(GENERATORS)
    assert saved["video"]["n_videos"] == 100

    reloaded = load_predictions(out / "predictions.parquet")
    pd.testing.assert_frame_equal(
        reloaded[["path", "label", "p_fake"]], frame[["path", "label", "p_fake"]].astype({"label": np.int8})
    )
    report = (out / "report.md").read_text()
    assert "# Evaluation: DiFF T2I" in report
    assert "## Per generator" in report and "## Per forgery_type" in report and "video (mean)" in report
    assert f"{metrics['groups']['generator']['SDXL']['auc']:.4f}" in report
    for plot in ("roc.png", "histogram.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.width > 300


def test_single_class_metrics_are_null_in_json(tmp_path: Path) -> None:
    frame = predictions(200, 0.3, seed=1)
    fakes = frame[frame.label == 1].reset_index(drop=True)
    with pytest.warns(UserWarning, match="undefined"):
        metrics = evaluate_predictions(fakes, name="fakes only")
    write_evaluation(tmp_path, fakes, metrics, predictions_format="csv")
    saved = strict_json(tmp_path / "metrics.json")
    assert saved["overall"]["auc"] is None and saved["overall"]["real_acc"] is None
    assert saved["overall"]["fake_acc"] == pytest.approx(float((fakes.p_fake > 0.5).mean()))
    assert math.isnan(read_metrics(tmp_path / "metrics.json")["overall"]["auc"])
    assert (tmp_path / "predictions.csv").is_file() and (tmp_path / "histogram.png").is_file()


def test_run_report_across_test_sets(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"T2I": 0.4, "FS": 0.1}, seed=0, plots=True)
    summary = strict_json(run / "eval" / "metrics.json")
    assert list(summary["test_sets"]) == ["T2I", "FS"]
    aucs = [summary["test_sets"][name]["overall"]["auc"] for name in ("T2I", "FS")]
    assert summary["mean"]["auc"] == pytest.approx(np.mean(aucs))
    assert aucs[0] > aucs[1]
    report = (run / "eval" / "report.md").read_text()
    assert "| **mean** |" in report and "## AUC per generator" in report and "video AUC" in report
    assert (run / "eval" / "roc.png").is_file()
    # Rebuilt from the files on disk alone, the summary is the same.
    (run / "eval" / "metrics.json").unlink()
    write_run_report(run / "eval", plots=False)
    rebuilt = strict_json(run / "eval" / "metrics.json")
    assert rebuilt["mean"]["auc"] == pytest.approx(summary["mean"]["auc"])


def test_find_predictions_layouts(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"T2I": 0.4, "FS": 0.1}, seed=0, fmt="csv")
    expected = {
        "T2I": run / "eval" / "T2I" / "predictions.csv",
        "FS": run / "eval" / "FS" / "predictions.csv",
    }
    assert find_predictions(run) == dict(sorted(expected.items()))
    assert find_predictions(run / "eval") == find_predictions(run)
    assert find_predictions(run / "eval" / "FS") == {"FS": expected["FS"]}
    assert find_predictions(expected["T2I"]) == {"T2I": expected["T2I"]}
    with pytest.raises(PredictionsError, match="no predictions found"):
        find_predictions(tmp_path)


def test_malformed_predictions_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    pd.DataFrame({"path": ["a.png"], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(PredictionsError, match=r"predictions.csv: missing column\(s\) \['p_fake'\]"):
        load_predictions(path)
    pd.DataFrame({"label": [0, 3], "p_fake": [0.1, 0.2]}).to_csv(path, index=False)
    with pytest.raises(PredictionsError, match=r"predictions\.csv: label: .* row 1 holds 3"):
        load_predictions(path)
    broken = tmp_path / "predictions.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(PredictionsError, match=r"predictions\.parquet: cannot read predictions"):
        load_predictions(broken)


def test_cli_report_puts_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    strong = write_run(tmp_path / "strong", {"T2I": 0.45, "FS": 0.3}, seed=0)
    weak = write_run(tmp_path / "weak", {"T2I": 0.15, "FS": 0.05}, seed=10, fmt="csv")
    assert run_app(app, ["report", str(strong), str(weak)]) == 0
    markdown = capsys.readouterr().out
    assert "| test set | strong | weak |" in markdown
    assert "## Per generator" in markdown and "## Video level" in markdown
    strong_t2i = strict_json(strong / "eval" / "T2I" / "metrics.json")["overall"]["auc"]
    assert f"| T2I | **{strong_t2i:.4f}** |" in markdown  # best run in bold

    out = tmp_path / "compare.md"
    assert run_app(app, ["report", str(strong), str(weak), "--out", str(out), "--metric", "eer"]) == 0
    assert out.read_text().startswith("# EER by run")
    table = pd.read_csv(tmp_path / "compare.csv", keep_default_na=False)
    assert list(table.columns) == ["test_set", "level", "group_by", "group", "strong", "weak"]
    frame_rows = table[(table.level == "frame") & (table.group == "overall")]
    assert frame_rows.test_set.tolist() == ["FS", "T2I"]
    assert (frame_rows.strong < frame_rows.weak).all()  # a stronger detector has a lower EER
    sdxl = table[(table.group_by == "generator") & (table.group == "SDXL") & (table.test_set == "T2I")]
    expected = strict_json(weak / "eval" / "T2I" / "metrics.json")["groups"]["generator"]["SDXL"]["eer"]
    assert float(sdxl.weak.iloc[0]) == pytest.approx(expected)


def test_compare_runs_with_intervals(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", {"T2I": 0.3}, seed=0)
    table = compare_runs([run, run / "eval"], bootstrap=30, video=False, group_by=())
    runs = ["a", "a low", "a high", "a#2", "a#2 low", "a#2 high"]
    assert list(table.columns) == ["test_set", "level", "group_by", "group", *runs]
    row = table.iloc[0]
    assert row["a low"] <= row["a"] <= row["a high"]
    assert row["a"] == row["a#2"]


def test_cli_report_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["report", str(tmp_path / "missing")]) == 2
    assert "missing: no such run directory" in capsys.readouterr().err
    test_dir = tmp_path / "run" / "eval" / "T2I"
    test_dir.mkdir(parents=True)
    pd.DataFrame({"path": ["a.png"], "label": [0], "p_fake": ["high"]}).to_csv(
        test_dir / "predictions.csv", index=False
    )
    assert run_app(app, ["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "T2I/predictions.csv" in err and "p_fake" in err
    assert run_app(app, ["report", str(tmp_path / "run"), "--metric", "f1"]) == 2
    assert "unknown metric 'f1'" in capsys.readouterr().err

"""Statistics across training seeds: mean ± sd, paired t-intervals and the paired image bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mfclip.metrics import MetricsError
from mfclip.metrics.seeds import paired_bootstrap, render_seed_summary, seed_statistics, with_mean_row

KEY = {"level": "frame", "group_by": "", "group": "overall"}


def _table() -> pd.DataFrame:
    rows = [
        {"test_set": "seen", **KEY, "A-s0": 0.80, "A-s1": 0.84, "A-s2": 0.78, "B-s0": 0.70, "B-s1": 0.79},
        {"test_set": "unseen", **KEY, "A-s0": 0.60, "A-s1": 0.66, "A-s2": 0.61, "B-s0": 0.62, "B-s1": 0.64},
    ]
    return pd.DataFrame(rows)


COLUMNS = {"A": {0: "A-s0", 1: "A-s1", 2: "A-s2"}, "B": {0: "B-s0", 1: "B-s1"}}
REFERENCES = {"A": "A", "B": "A"}


def test_mean_sd_and_paired_t_interval_match_scipy() -> None:
    table = with_mean_row(_table(), ["A-s0", "A-s1", "A-s2", "B-s0", "B-s1"])
    assert table["test_set"].tolist() == ["seen", "unseen", "mean"]
    assert table.loc[2, "A-s1"] == pytest.approx((0.84 + 0.66) / 2)
    result = seed_statistics(table, COLUMNS, REFERENCES).set_index(["test_set", "column"])

    a = result.loc[("seen", "A")]
    assert a["n"] == 3 and a["mean"] == pytest.approx(np.mean([0.80, 0.84, 0.78]))
    assert a["sd"] == pytest.approx(np.std([0.80, 0.84, 0.78], ddof=1))
    assert math.isnan(a["diff"]) and a["reference"] == "A"  # the reference is not compared with itself

    b = result.loc[("seen", "B")]
    # Paired over the seeds both have (0 and 1): differences -0.10 and -0.05.
    differences = np.array([0.70 - 0.80, 0.79 - 0.84])
    assert b["n"] == 2 and b["n_paired"] == 2 and b["diff"] == pytest.approx(differences.mean())
    test = stats.ttest_rel([0.70, 0.79], [0.80, 0.84])
    assert b["p_value"] == pytest.approx(test.pvalue)
    half = stats.t.ppf(0.975, 1) * differences.std(ddof=1) / math.sqrt(2)
    assert (b["diff_low"], b["diff_high"]) == pytest.approx(
        (differences.mean() - half, differences.mean() + half)
    )
    low, high = test.confidence_interval(0.95)
    assert (b["diff_low"], b["diff_high"]) == pytest.approx((low, high))


def test_one_seed_gives_means_without_spread_and_missing_runs_are_errors() -> None:
    table = _table()
    one = seed_statistics(table, {"A": {0: "A-s0"}, "B": {0: "B-s0"}}, REFERENCES)
    row = one[(one["test_set"] == "seen") & (one["column"] == "B")].iloc[0]
    assert row["mean"] == pytest.approx(0.70) and math.isnan(row["sd"])
    assert row["diff"] == pytest.approx(-0.10) and math.isnan(row["diff_low"]) and math.isnan(row["p_value"])
    with pytest.raises(MetricsError, match="C-s0"):
        seed_statistics(table, {"C": {0: "C-s0"}}, {})


def _predictions(rng: np.random.Generator, labels: np.ndarray, signal: float) -> pd.DataFrame:
    scores = rng.normal(size=len(labels)) + signal * labels
    frame = pd.DataFrame({"path": [f"img{i:03d}.jpg" for i in range(len(labels))], "label": labels})
    frame["p_fake"] = 1 / (1 + np.exp(-scores))
    return frame.sample(frac=1.0, random_state=int(rng.integers(1000)))  # any row order


def test_paired_bootstrap_equals_explicit_resampling_with_the_same_draws() -> None:
    rng = np.random.default_rng(3)
    labels = np.array([0] * 30 + [1] * 20)
    frames = {
        "ref": {s: _predictions(rng, labels, 1.0) for s in (0, 1)},
        "new": {s: _predictions(rng, labels, 1.5) for s in (0, 1)},
    }
    found = paired_bootstrap(frames, {"ref": "ref", "new": "ref"}, metrics=["auc"], n_resamples=40, seed=5)
    assert set(found["auc"]) == {"new"}

    # The documented draws, replayed: images sorted by path, fakes then reals drawn per replicate.
    ordered = {
        (c, s): f.sort_values("path").reset_index(drop=True) for c in frames for s, f in frames[c].items()
    }
    first = ordered[("ref", 0)]
    fakes = np.flatnonzero(first["label"].to_numpy() == 1)
    reals = np.flatnonzero(first["label"].to_numpy() == 0)
    differences = []
    for stream in np.random.SeedSequence(5).spawn(40):
        draw = np.random.default_rng(stream)
        picked = np.concatenate(
            [fakes[draw.integers(0, len(fakes), len(fakes))], reals[draw.integers(0, len(reals), len(reals))]]
        )
        aucs = {
            key: roc_auc_score(f["label"].to_numpy()[picked], f["p_fake"].to_numpy()[picked])
            for key, f in ordered.items()
        }
        differences.append(np.mean([aucs[("new", s)] - aucs[("ref", s)] for s in (0, 1)]))
    expected = np.quantile(differences, [0.025, 0.975])
    assert tuple(found["auc"]["new"]) == pytest.approx(tuple(expected))


def test_paired_bootstrap_of_identical_runs_is_zero_and_needs_the_same_images() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    frame = _predictions(rng, labels, 1.0)
    same = paired_bootstrap({"a": {0: frame}, "b": {0: frame.copy()}}, {"b": "a"}, n_resamples=20)
    assert tuple(same["auc"]["b"]) == (0.0, 0.0)
    other = frame.copy()
    other.loc[other.index[0], "path"] = "elsewhere.jpg"
    with pytest.raises(MetricsError, match="other images"):
        paired_bootstrap({"a": {0: frame}, "b": {0: other}}, {"b": "a"}, n_resamples=5)
    with pytest.raises(MetricsError, match="unknown metrics"):
        paired_bootstrap({"a": {0: frame}}, {}, metrics=["f1"], n_resamples=5)


def test_summary_renders_mean_sd_and_differences() -> None:
    table = with_mean_row(_table(), ["A-s0", "A-s1", "A-s2", "B-s0", "B-s1"])
    statistics = {"auc": seed_statistics(table, COLUMNS, REFERENCES)}
    markdown = render_seed_summary(statistics, ["A", "B"], [0, 1, 2])
    assert "| A | 3 | 0.807 ± 0.031 |" in markdown
    assert "| B − A | -0.075 [" in markdown and "p=0.20 |" in markdown
    assert "Training seeds 0, 1, 2" in markdown

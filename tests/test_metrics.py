"""Binary metrics vs scikit-learn, the EER definition, bootstrap intervals, videos and grouped evaluation."""

from __future__ import annotations

import itertools
import math
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mfclip.metrics import (
    MetricsError,
    UndefinedMetricWarning,
    aggregate_by_video,
    bootstrap_ci,
    compute_metrics,
    equal_error_rate,
    evaluate_predictions,
    evaluate_test_sets,
    roc_curve,
)
from mfclip.metrics._ranking import Ranking, scalar


def random_set(seed: int, n: int, decimals: int | None = None, separation: float = 0.3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.clip(rng.normal(0.4 + separation * labels, 0.25), 0, 1)
    if decimals is not None:
        scores = np.round(scores, decimals)
    return labels, scores


def sklearn_metrics(labels, scores, threshold=0.5):
    predicted = (np.asarray(scores) > threshold).astype(int)
    return {
        "auc": skm.roc_auc_score(labels, scores),
        "ap": skm.average_precision_score(labels, scores),
        "acc": skm.accuracy_score(labels, predicted),
        "fake_acc": skm.recall_score(labels, predicted, pos_label=1, zero_division=np.nan),
        "real_acc": skm.recall_score(labels, predicted, pos_label=0, zero_division=np.nan),
    }


def brute_force_eer(labels, scores) -> float:
    """The documented definition, literally: walk the ROC polyline through every distinct threshold and
    intersect the first segment that reaches FNR <= FPR with the line FNR = FPR."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    points = [(0.0, 0.0)]
    for threshold in np.unique(scores)[::-1]:
        points.append((np.mean(negatives >= threshold), np.mean(positives >= threshold)))
    points.append((1.0, 1.0))
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        g0, g1 = 1 - y0 - x0, 1 - y1 - x1
        if g0 > 0 >= g1:
            return x0 + g0 / (g0 - g1) * (x1 - x0)
    raise AssertionError("the ROC curve must cross FNR = FPR")


# ------------------------------------------------------------------------------- scalar metrics


@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_sklearn(seed: int, decimals: int | None) -> None:
    labels, scores = random_set(seed, 50 + 97 * seed, decimals)
    ours = compute_metrics(labels, scores)
    for name, expected in sklearn_metrics(labels, scores).items():
        assert ours[name] == pytest.approx(expected, abs=1e-12), name
    assert ours["n"] == len(labels)
    assert ours["n_fake"] == labels.sum()
    assert ours["tp"] + ours["fn"] == ours["n_fake"]
    assert ours["tn"] + ours["fp"] == ours["n_real"]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_threshold_counts_strictly_above(threshold: float) -> None:
    labels, scores = random_set(7, 400, decimals=1)  # many scores exactly at the threshold
    ours = compute_metrics(labels, scores, threshold=threshold)
    for name, expected in sklearn_metrics(labels, scores, threshold).items():
        assert ours[name] == pytest.approx(expected, abs=1e-12), name


def test_all_equal_scores() -> None:
    labels = np.array([0, 1, 1, 0, 1, 1, 0, 1])
    scores = np.full(len(labels), 0.7)
    ours = compute_metrics(labels, scores)
    assert ours["auc"] == pytest.approx(0.5)
    assert ours["ap"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert ours["eer"] == pytest.approx(0.5)  # the ROC is the diagonal
    assert ours["fake_acc"] == 1.0 and ours["real_acc"] == 0.0


def test_perfect_and_inverted_classifiers() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    perfect = compute_metrics(labels, scores)
    assert (perfect["auc"], perfect["ap"], perfect["eer"], perfect["acc"]) == (1.0, 1.0, 0.0, 1.0)
    inverted = compute_metrics(labels, 1 - scores)
    assert inverted["auc"] == 0.0
    assert inverted["eer"] == 1.0
    assert inverted["ap"] == pytest.approx(skm.average_precision_score(labels, 1 - scores))
    assert inverted["acc"] == 0.0


def test_dtypes_and_extreme_scores() -> None:
    labels, scores = random_set(11, 500)
    as_float32 = scores.astype(np.float32)
    assert compute_metrics(labels.astype(bool), as_float32)["auc"] == pytest.approx(
        skm.roc_auc_score(labels, as_float32), abs=1e-12
    )
    # Infinite scores (saturated logits) rank like the largest / smallest finite ones.
    logits = np.where(labels == 1, np.inf, -np.inf)
    logits[:50] = np.random.default_rng(0).normal(size=50)
    finite = np.clip(logits, -1e300, 1e300)
    assert compute_metrics(labels, logits)["auc"] == pytest.approx(
        skm.roc_auc_score(labels, finite), abs=1e-12
    )


# ------------------------------------------------------------------------------------------ EER


@pytest.mark.parametrize("decimals", [None, 1])
def test_eer_matches_brute_force_definition(decimals: int | None) -> None:
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 60))
        labels, scores = random_set(seed, n, decimals, separation=rng.uniform(-0.5, 0.8))
        assert compute_metrics(labels, scores)["eer"] == pytest.approx(
            brute_force_eer(labels, scores), abs=1e-12
        )


def test_eer_matches_root_finding() -> None:
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq

    for seed in range(10):
        labels, scores = random_set(seed, 200 + 50 * seed)
        ours = equal_error_rate(labels, scores)
        # Without ties the ROC polyline is sklearn's full curve; its FNR = FPR root is our EER.
        fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
        root = brentq(lambda x, f=interp1d(fpr, tpr): 1.0 - x - f(x), 0.0, 1.0)
        assert ours == pytest.approx(root, abs=1e-9)
        # The nearest-vertex variants (torchmetrics, DeepfakeBench) are within one ROC step of it.
        fnr = 1 - tpr
        nearest = np.argmin(np.abs(fpr - fnr))
        step = 1.0 / min(labels.sum(), (1 - labels).sum())
        assert abs((fpr[nearest] + fnr[nearest]) / 2 - ours) <= step


def test_roc_curve_vertices() -> None:
    labels, scores = random_set(5, 300, decimals=2)
    fpr, tpr = roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    full_fpr, full_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    full = set(zip(np.round(full_fpr, 12), np.round(full_tpr, 12), strict=True))
    assert all(point in full for point in zip(np.round(fpr, 12), np.round(tpr, 12), strict=True))


# -------------------------------------------------------------------------------- undefined / bad


def test_single_class_is_nan_with_warning() -> None:
    with pytest.warns(UndefinedMetricWarning, match="no real rows"):
        result = compute_metrics([1, 1, 1], [0.2, 0.6, 0.9])
    assert math.isnan(result["auc"]) and math.isnan(result["ap"]) and math.isnan(result["eer"])
    assert math.isnan(result["real_acc"])
    assert result["fake_acc"] == pytest.approx(2 / 3) and result["acc"] == pytest.approx(2 / 3)
    with pytest.warns(UndefinedMetricWarning, match="no any rows|no fake rows"):
        assert math.isnan(compute_metrics([0, 0], [0.1, 0.2])["auc"])


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(MetricsError, match="row 2 holds 2"):
        compute_metrics([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MetricsError, match=r"1 scores are NaN \(first at row 1\)"):
        compute_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(MetricsError, match="differ in length"):
        compute_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels must be 0"):
        compute_metrics(["real", "fake"], [0.1, 0.2])


# ------------------------------------------------------------------------------------- bootstrap


def test_weighted_curves_equal_repeated_rows() -> None:
    """The bootstrap's weighted path equals the metrics of the explicitly resampled data."""
    labels, scores = random_set(2, 300, decimals=2)
    groups = np.random.default_rng(0).integers(0, 3, len(labels))
    ranking = Ranking(labels, scores)
    counts = np.random.default_rng(1).integers(0, 4, len(labels)).astype(np.float64)
    fake_w = counts[ranking.fake_rows][None, :]
    real_w = counts[ranking.real_rows][None, :]
    fake_group, real_group = groups[ranking.fake_rows], groups[ranking.real_rows]
    for g in range(3):
        for own_reals in (False, True):
            real_index = np.flatnonzero(real_group == g) if own_reals else None
            spec = ranking.spec(np.flatnonzero(fake_group == g), real_index)
            selected = real_w if real_index is None else real_w[:, real_index]
            cumsum = np.concatenate([[[0.0]], np.cumsum(selected, axis=1)], axis=1)
            got = scalar(spec.weighted(fake_w, cumsum))
            rows = (labels == 1) & (groups == g) | (labels == 0) & ((groups == g) | (not own_reals))
            repeat = counts[rows].astype(int)
            expected = compute_metrics(np.repeat(labels[rows], repeat), np.repeat(scores[rows], repeat))
            for name in ("auc", "ap", "eer", "acc", "real_acc", "fake_acc"):
                assert got[name] == pytest.approx(expected[name], abs=1e-12), (g, own_reals, name)


def test_bootstrap_interval_contains_estimate_and_is_reproducible() -> None:
    labels, scores = random_set(4, 400, decimals=2)
    point = compute_metrics(labels, scores)
    first = bootstrap_ci(labels, scores, n_resamples=200, seed=3)
    again = bootstrap_ci(labels, scores, n_resamples=200, seed=3)
    other = bootstrap_ci(labels, scores, n_resamples=200, seed=4)
    assert first == again
    assert first != other
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name
        assert high - low < 0.2
    narrow = bootstrap_ci(labels, scores, ["auc"], n_resamples=200, seed=3, alpha=0.5)["auc"]
    assert first["auc"].low < narrow.low <= narrow.high < first["auc"].high


@pytest.mark.parametrize("stratified", [True, False])
def test_bootstrap_fast_path_equals_resampling_with_sklearn(stratified: bool) -> None:
    labels, scores = random_set(6, 150, decimals=1)
    result = bootstrap_ci(
        labels,
        scores,
        {"auc": "auc", "sk_auc": skm.roc_auc_score, "ap": "ap", "sk_ap": skm.average_precision_score},
        n_resamples=100,
        seed=0,
        stratified=stratified,
    )
    assert result["auc"] == pytest.approx(result["sk_auc"], abs=1e-12)
    assert result["ap"] == pytest.approx(result["sk_ap"], abs=1e-12)


def test_bootstrap_rejects_unknown_metric() -> None:
    with pytest.raises(MetricsError, match="unknown metric 'f1'"):
        bootstrap_ci([0, 1], [0.1, 0.9], ["f1"], n_resamples=5)


# ---------------------------------------------------------------------------------------- videos


def video_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": [0, 0, 0, 1, 1, 1, 1, 0],
            "p_fake": [0.1, 0.5, 0.3, 0.9, 0.2, 0.8, 0.7, 0.4],
            "dataset": ["A", "A", "A", "A", "A", "B", "B", "B"],
            "video_id": ["v1", "v1", "v2", "v3", "v3", "v1", "v1", ""],
            "generator": ["", "", "", "g1", "g1", "g2", "g2", ""],
        }
    )


def test_video_aggregation_mean_and_max() -> None:
    frame = video_frame()
    mean = aggregate_by_video(frame, keep=["generator"])
    assert list(mean.columns) == ["dataset", "video_id", "label", "p_fake", "n_frames", "generator"]
    # v1 of dataset A and v1 of dataset B are different videos; the frame without an id is left out.
    assert mean[["dataset", "video_id", "label"]].values.tolist() == [
        ["A", "v1", 0],
        ["A", "v2", 0],
        ["A", "v3", 1],
        ["B", "v1", 1],
    ]
    assert mean["p_fake"].tolist() == pytest.approx([0.3, 0.3, 0.55, 0.75])
    assert mean["n_frames"].tolist() == [2, 1, 2, 2]
    assert aggregate_by_video(frame, how="max")["p_fake"].tolist() == pytest.approx([0.5, 0.3, 0.9, 0.8])


def test_video_with_mixed_labels_is_an_error() -> None:
    frame = video_frame()
    frame.loc[1, "label"] = 1
    with pytest.raises(MetricsError, match="video 'A/v1' has both real and fake frames"):
        aggregate_by_video(frame)


def test_evaluation_reports_video_level() -> None:
    frame = video_frame()
    result = evaluate_predictions(frame, group_by=("generator",))
    videos = aggregate_by_video(frame)
    assert result["video"]["n_videos"] == 4
    assert result["video"]["key"] == ["dataset", "video_id"]
    assert result["video"]["overall"]["auc"] == pytest.approx(
        skm.roc_auc_score(videos["label"], videos["p_fake"])
    )
    assert set(result["video"]["groups"]["generator"]) == {"g1", "g2"}
    assert evaluate_predictions(frame, video=False)["video"] is None


# --------------------------------------------------------------------------------------- grouped


def grouped_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    generators = np.array(["SDXL", "Midjourney", "DiffFace", "Imagic"])
    forgery = {"SDXL": "entire", "Midjourney": "entire", "DiffFace": "swap", "Imagic": "edit"}
    generator = np.where(labels == 1, generators[rng.integers(0, 4, n)], "")
    strength = {"": 0.0, "SDXL": 0.4, "Midjourney": 0.3, "DiffFace": 0.1, "Imagic": 0.2}
    scores = np.clip(rng.normal(0.4 + np.vectorize(strength.get)(generator), 0.2), 0, 1).astype(np.float32)
    return pd.DataFrame(
        {
            "path": [f"img_{i}.png" for i in range(n)],
            "label": labels,
            "p_fake": scores,
            "dataset": rng.choice(["DiFF", "Other"], n),
            "generator": pd.Categorical(generator),
            "forgery_type": [forgery.get(g, "") for g in generator],
        }
    )


def test_groups_share_all_reals() -> None:
    frame = grouped_frame()
    result = evaluate_predictions(frame)
    assert result["group_by"] == ["generator", "forgery_type"]
    assert list(result["groups"]["generator"]) == ["DiffFace", "Imagic", "Midjourney", "SDXL"]
    assert list(result["groups"]["forgery_type"]) == ["edit", "entire", "swap"]
    reals = frame[frame.label == 0]
    for generator, values in result["groups"]["generator"].items():
        subset = pd.concat([frame[frame.generator == generator], reals])
        expected = sklearn_metrics(subset.label, subset.p_fake)
        assert values["reals"] == "shared"
        assert values["n_real"] == len(reals)
        for name, value in expected.items():
            assert values[name] == pytest.approx(value, abs=1e-12), (generator, name)
    assert result["overall"]["auc"] == pytest.approx(skm.roc_auc_score(frame.label, frame.p_fake), abs=1e-12)
    # A stronger generator is easier to detect.
    assert result["groups"]["generator"]["SDXL"]["auc"] > result["groups"]["generator"]["DiffFace"]["auc"]


def test_groups_with_their_own_reals_and_unknown_values() -> None:
    frame = grouped_frame(1200, seed=1)
    frame.loc[frame.index[:40], "generator"] = np.nan  # some fakes without a generator
    result = evaluate_predictions(frame, group_by=("dataset", "generator", "family"))
    assert "family" not in result["groups"]  # column absent
    for dataset, values in result["groups"]["dataset"].items():
        subset = frame[frame.dataset == dataset]
        assert values["reals"] == "group"
        assert values["auc"] == pytest.approx(skm.roc_auc_score(subset.label, subset.p_fake), abs=1e-12)
    unknown = result["groups"]["generator"]["(unknown)"]
    fakes = frame.label == 1
    assert unknown["n_fake"] == int((frame.generator.isna() & fakes).sum())
    frame["empty"] = ""
    assert "empty" not in evaluate_predictions(frame, group_by=("empty",))["groups"]


def test_grouped_bootstrap_intervals() -> None:
    frame = grouped_frame(1500, seed=2)
    result = evaluate_predictions(frame, bootstrap=100, seed=1)
    assert result["bootstrap"]["n_resamples"] == 100
    for values in [result["overall"], *result["groups"]["generator"].values()]:
        for name in ("auc", "ap", "eer", "acc"):
            low, high = values["ci"][name]
            assert low <= values[name] <= high
    again = evaluate_predictions(frame, bootstrap=100, seed=1)
    assert again["groups"]["generator"]["SDXL"]["ci"] == result["groups"]["generator"]["SDXL"]["ci"]


def test_single_class_groups_warn_once() -> None:
    frame = grouped_frame(300)
    fakes_only = frame[frame.label == 1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_predictions(fakes_only, name="fakes")
    undefined = [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert len(undefined) == 1
    assert "fakes" in str(undefined[0].message) and "generator=SDXL" in str(undefined[0].message)
    assert math.isnan(result["overall"]["auc"])
    assert result["overall"]["fake_acc"] == pytest.approx((fakes_only.p_fake > 0.5).mean())


def test_several_test_sets() -> None:
    first, second = grouped_frame(400, 3), grouped_frame(500, 4)
    frame = pd.concat([first.assign(test_set="A"), second.assign(test_set="B")], ignore_index=True)
    with pytest.raises(MetricsError, match="2 test sets"):
        evaluate_predictions(frame)
    results = evaluate_test_sets(frame)
    assert list(results) == ["A", "B"]
    assert results["B"]["test_set"] == "B"
    assert results["B"]["overall"]["n"] == 500
    assert results["B"]["overall"]["auc"] == pytest.approx(skm.roc_auc_score(second.label, second.p_fake))


def test_missing_columns_are_named() -> None:
    with pytest.raises(MetricsError, match="no 'p_fake' column"):
        evaluate_predictions(pd.DataFrame({"label": [0, 1], "score": [0.1, 0.9]}))


def test_million_rows_memory_bounded() -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    labels = (rng.random(n) < 0.5).astype(np.int8)
    codes = np.where(labels == 1, rng.integers(0, 13, n), 13)
    frame = pd.DataFrame(
        {
            "label": labels,
            "p_fake": rng.random(n, dtype=np.float32),
            "generator": pd.Categorical.from_codes(codes, [f"g{i}" for i in range(13)] + [""]),
        }
    )
    tracemalloc.start()
    try:
        result = evaluate_predictions(frame, group_by=("generator",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result["groups"]["generator"]) == 13
    assert abs(result["overall"]["auc"] - 0.5) < 0.01
    # The table itself holds 5 MB; sorting and 13 groups stay within a small multiple of it (~80 MiB).
    assert peak < 128 * 2**20, f"peak traced memory {peak / 2**20:.0f} MiB"

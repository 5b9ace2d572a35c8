"""Evaluation of a predictions table: overall, per group (generator, forgery type, ...) and per video.

**Grouping rule.** A group is a value that fake rows carry in a grouping column (e.g. generator
``SDXL``). Its set holds the fakes with that value plus:

- the reals with that same value, when there are any (e.g. grouping by ``dataset``, where reals and
  fakes both belong to a dataset): ``"reals": "group"``;
- otherwise **all** reals of the test set (``"reals": "shared"``), the standard practice for
  per-generator and per-forgery-type tables, since a group of fakes alone has one class and no AUC.

Fakes with no value in a column (empty or missing) form the group ``(unknown)`` when other fakes have
one; a column where no fake has a value is skipped. Reals never form a group of their own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mfclip.metrics._ranking import METRIC_NAMES, CurveSpec, MetricsError, Ranking, scalar
from mfclip.metrics.binary import UndefinedMetricWarning, finalize
from mfclip.metrics.bootstrap import bootstrap_samples, percentile_interval
from mfclip.metrics.video import VIDEO_AGGREGATES, aggregate_by_video, missing_values, video_key
from mfclip.utils.config import closest

METRICS_FORMAT = "mfclip-metrics"
METRICS_FORMAT_VERSION = 1
DEFAULT_GROUP_BY: tuple[str, ...] = ("generator", "forgery_type")
UNKNOWN_GROUP = "(unknown)"
OVERALL = "overall"


def check_group_by(group_by: Sequence[str], columns: Iterable[str], sets: str = "test sets") -> None:
    """Refuse a grouping column that none of the ``sets`` has, suggesting the closest of their
    ``columns`` (a set that lacks a column another one has is fine: it is grouped by those it has)."""
    available = {str(c) for c in columns}
    for column in group_by:
        if column not in available:
            hint = closest(column, available)
            suggestion = f"; did you mean {hint!r}?" if hint else ""
            raise MetricsError(
                f"group_by (--group-by) column {column!r} is in none of the {sets}{suggestion} "
                f"(columns: {', '.join(sorted(available))})"
            )


def evaluate_predictions(
    predictions: pd.DataFrame,
    *,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    threshold: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
    video: bool = True,
    video_aggregate: str = "mean",
    name: str | None = None,
    label_column: str = "label",
    score_column: str = "p_fake",
) -> dict[str, Any]:
    """All metrics of one test set's predictions (columns ``label``, ``p_fake`` and manifest columns).

    ``group_by`` columns that are absent are skipped. ``bootstrap`` > 0 adds percentile intervals
    (``ci``) from that many replicates to every metric dict. With ``video`` and a ``video_id``
    column, frame scores are aggregated per video (``video_aggregate``: "mean" or "max") and the same
    evaluation runs on videos. Returns a JSON-ready dict (NaN for undefined metrics); see
    ``docs/metrics.md`` for its layout.
    """
    for column in (label_column, score_column):
        if column not in predictions.columns:
            raise MetricsError(
                f"predictions have no {column!r} column (columns: {list(predictions.columns)})"
            )
    if video_aggregate not in VIDEO_AGGREGATES:
        raise MetricsError(
            f"video aggregate must be one of {list(VIDEO_AGGREGATES)}, got {video_aggregate!r}"
        )
    if bootstrap < 0 or (bootstrap and not 0 < alpha < 1):
        raise MetricsError(f"bootstrap needs resamples >= 0 and 0 < alpha < 1, got {bootstrap} and {alpha}")
    if isinstance(group_by, str):
        group_by = (group_by,)
    if name is None and "test_set" in predictions.columns:
        names = predictions["test_set"].dropna().unique()
        if len(names) > 1:
            raise MetricsError(
                f"predictions hold {len(names)} test sets ({', '.join(map(str, names[:5]))}); "
                "evaluate them separately (evaluate_test_sets)"
            )
        if len(names) == 1:
            name = str(names[0])
    label = name or "predictions"
    group_by = [column for column in group_by if column in predictions.columns]
    options = {
        "threshold": threshold,
        "bootstrap": bootstrap,
        "seed": seed,
        "alpha": alpha,
        "stratified": stratified,
    }

    frame_level = _evaluate_table(predictions, group_by, label, label_column, score_column, **options)
    video_level = None
    if video and "video_id" in predictions.columns and not missing_values(predictions["video_id"]).all():
        videos = aggregate_by_video(
            predictions,
            how=video_aggregate,
            keep=group_by,
            label_column=label_column,
            score_column=score_column,
        )
        video_level = {
            "aggregate": video_aggregate,
            "key": video_key(predictions),
            "n_videos": len(videos),
            **_evaluate_table(videos, group_by, f"{label} (videos)", "label", "p_fake", **options),
        }
    return {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "test_set": name,
        "threshold": threshold,
        "group_by": group_by,
        "bootstrap": (
            {
                "n_resamples": bootstrap,
                "alpha": alpha,
                "seed": seed,
                "stratified": stratified,
                "method": "percentile",
            }
            if bootstrap
            else None
        ),
        **frame_level,
        "video": video_level,
    }


def evaluate_test_sets(
    predictions: pd.DataFrame, test_set_column: str = "test_set", **options: Any
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_predictions` on each test set of a table holding several (``test_set`` column)."""
    if test_set_column not in predictions.columns:
        name = options.pop("name", None) or "test"
        return {name: evaluate_predictions(predictions, name=name, **options)}
    results = {}
    for name, rows in predictions.groupby(test_set_column, sort=True, observed=True).indices.items():
        results[str(name)] = evaluate_predictions(predictions.iloc[rows], name=str(name), **options)
    return results


def group_specs(
    ranking: Ranking, predictions: pd.DataFrame, column: str, threshold: float = 0.5
) -> dict[str, tuple[CurveSpec, str]]:
    """The sets of one grouping column under the grouping rule: ``{group: (spec, "shared" | "group")}``."""
    codes, names = _factorize(predictions[column])
    fake_codes = codes[ranking.fake_rows]
    real_codes = codes[ranking.real_rows]
    present = np.unique(fake_codes[fake_codes >= 0])
    groups: dict[str, tuple[CurveSpec, str]] = {}
    if len(present) == 0:
        return groups
    real_counts = np.bincount(real_codes[real_codes >= 0], minlength=len(names))
    for code in sorted(present, key=lambda c: str(names[c])):
        fakes = np.flatnonzero(fake_codes == code)
        if real_counts[code]:
            groups[str(names[code])] = (
                ranking.spec(fakes, np.flatnonzero(real_codes == code), threshold),
                "group",
            )
        else:
            groups[str(names[code])] = (ranking.spec(fakes, None, threshold), "shared")
    unknown = np.flatnonzero(fake_codes < 0)
    if len(unknown):
        groups[UNKNOWN_GROUP] = (ranking.spec(unknown, None, threshold), "shared")
    return groups


def _factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (-1 = unknown) and the value of each code, without copying categorical columns."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        names = np.asarray(series.cat.categories, dtype=object)
    else:
        codes, names = pd.factorize(series, use_na_sentinel=True)
        names = np.asarray(names, dtype=object)
    empty = [i for i, value in enumerate(names) if isinstance(value, str) and value == ""]
    if empty:
        codes = np.where(np.isin(codes, empty), -1, codes)
    return codes, names


def _evaluate_table(
    table: pd.DataFrame,
    group_by: Sequence[str],
    label: str,
    label_column: str,
    score_column: str,
    *,
    threshold: float,
    bootstrap: int,
    seed: int,
    alpha: float,
    stratified: bool,
) -> dict[str, Any]:
    ranking = Ranking(table[label_column].to_numpy(), table[score_column].to_numpy())
    overall_key = ("", OVERALL)
    specs: dict[tuple[str, str], CurveSpec] = {overall_key: ranking.spec(threshold=threshold)}
    reals_rule: dict[tuple[str, str], str] = {}
    for column in group_by:
        for group, (spec, reals) in group_specs(ranking, table, column, threshold).items():
            specs[column, group] = spec
            reals_rule[column, group] = reals

    results = {key: finalize(scalar(spec.point())) for key, spec in specs.items()}
    undefined = [f"{c}={g}" if c else g for (c, g), values in results.items() if math.isnan(values["auc"])]
    if undefined:
        warnings.warn(
            f"{label}: AUC, AP and EER are undefined (one class only, reported as NaN) for "
            + ", ".join(undefined[:10])
            + (f" and {len(undefined) - 10} more" if len(undefined) > 10 else ""),
            UndefinedMetricWarning,
            stacklevel=3,
        )
    if bootstrap:
        samples = bootstrap_samples(ranking, specs, bootstrap, seed, stratified)
        for key, values in samples.items():
            results[key]["ci"] = {
                name: list(percentile_interval(values[name], alpha)) for name in METRIC_NAMES
            }

    groups: dict[str, dict[str, Any]] = {}
    for (column, group), reals in reals_rule.items():
        groups.setdefault(column, {})[group] = {**results[column, group], "reals": reals}
    return {"overall": results[overall_key], "groups": groups}


def metric_rows(metrics: Mapping[str, Any], level: str = "frame") -> list[dict[str, Any]]:
    """Flatten one test set's metrics into rows ``{level, group_by, group, <metric>...}`` (overall first)."""
    source = metrics if level == "frame" else metrics.get("video")
    if not source:
        return []
    rows = [{"level": level, "group_by": "", "group": OVERALL, **_flat(source["overall"])}]
    for column, groups in source.get("groups", {}).items():
        for group, values in groups.items():
            rows.append({"level": level, "group_by": column, "group": group, **_flat(values)})
    return rows


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in values.items() if key != "ci"}
    for name, (low, high) in (values.get("ci") or {}).items():
        flat[f"{name}_low"] = low
        flat[f"{name}_high"] = high
    return flat

"""Evaluation outputs on disk: predictions, metrics JSON, markdown reports and plots.

Layout of one run's evaluation (``RUN/eval``)::

    eval/
      <test_set>/predictions.parquet   one row per image: path, label, p_fake + manifest columns
      <test_set>/metrics.json          evaluate_predictions() of that test set
      <test_set>/report.md             its tables: overall, per generator / forgery type, videos
      <test_set>/roc.png               ROC curves: overall and per group of the first grouping column
      <test_set>/histogram.png         P(fake) histograms of reals and fakes
      metrics.json                     all test sets together, plus the mean over test sets
      report.md                        tables across test sets (rows) for every metric and group
      roc.png                          one ROC curve per test set

``<test_set>`` is the test set's name made safe as a directory name (:func:`safe_name`). Every file is
written atomically. Metrics in JSON are plain numbers; undefined ones (a class missing) are ``null``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfclip.metrics._ranking import MetricsError, Ranking, as_labels, as_scores
from mfclip.metrics.binary import roc_points
from mfclip.metrics.grouped import group_specs
from mfclip.schema import DESCRIPTIVE_COLUMNS
from mfclip.utils.io import atomic_write, atomic_write_json, atomic_write_text

#: Where a training run keeps its evaluation: ``RUN/eval/<test_set>/``.
EVAL_DIR = "eval"
#: The files of an evaluation: per test set and, in the evaluation folder, for all test sets together.
PREDICTIONS_FILES = ("predictions.parquet", "predictions.csv")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
REQUIRED_COLUMNS = ("label", "p_fake")
#: Columns of predictions stored as categories when read back: the test set and the manifest's labels.
CATEGORY_COLUMNS = ("test_set", *DESCRIPTIVE_COLUMNS, "split")
RUN_METRICS_FORMAT = "mfclip-run-metrics"

METRIC_TITLES = {
    "auc": "AUC",
    "ap": "AP",
    "eer": "EER",
    "acc": "ACC",
    "real_acc": "real-ACC",
    "fake_acc": "fake-ACC",
}
LOWER_IS_BETTER = frozenset({"eer"})


class PredictionsError(MetricsError):
    """A predictions file is missing or malformed; the message names the file."""


# --------------------------------------------------------------------------------------------- files


def safe_name(test_set: str) -> str:
    """A directory name for a test set: letters, digits, ``._-+=`` kept, anything else becomes ``_``."""
    name = re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(test_set)).strip("._")
    return name or "test"


def write_predictions(path: str | Path, predictions: pd.DataFrame) -> Path:
    """Write a predictions table atomically as Parquet or CSV (chosen by the file suffix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        with atomic_write(path, "wb") as handle:
            predictions.to_parquet(handle, index=False)
    elif path.suffix == ".csv":
        with atomic_write(path, "w") as handle:
            predictions.to_csv(handle, index=False)
    else:
        raise PredictionsError(f"{path}: predictions must be written as .parquet or .csv")
    return path


def prediction_columns(path: str | Path) -> list[str]:
    """The column names of a predictions file (.parquet or .csv), read without loading its rows."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: predictions file not found")
    if path.suffix not in (".parquet", ".csv"):
        raise PredictionsError(f"{path}: predictions must be a .parquet or .csv file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception as exc:
        raise PredictionsError(f"{path}: cannot read predictions: {exc}") from None


def load_predictions(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read and validate a predictions file (.parquet or .csv).

    ``columns``: read only these columns when present (``label`` and ``p_fake`` are always read and
    required). Manifest label columns come back as categoricals. Errors name the file and the row.
    """
    path = Path(path)
    available = prediction_columns(path)
    wanted = None if columns is None else list(dict.fromkeys([*REQUIRED_COLUMNS, *columns]))
    selected = None if wanted is None else [c for c in wanted if c in available]
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path, columns=selected)
        else:
            dtypes = {c: "category" for c in CATEGORY_COLUMNS if c in available}
            frame = pd.read_csv(path, usecols=selected, dtype=dtypes)
    except Exception as exc:
        raise PredictionsError(f"{path}: cannot read predictions: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise PredictionsError(f"{path}: missing column(s) {missing} (columns: {list(frame.columns)})")
    try:
        frame["label"] = as_labels(frame["label"].to_numpy(), "label")
        frame["p_fake"] = as_scores(frame["p_fake"].to_numpy(), "p_fake")
    except MetricsError as exc:
        raise PredictionsError(f"{path}: {exc}") from None
    for column in CATEGORY_COLUMNS:
        if column in frame.columns and frame[column].dtype == object:
            frame[column] = frame[column].astype("category")
    return frame


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: NaN / infinity become ``None``, numpy scalars Python numbers, tuples lists."""
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a ``metrics.json``; ``null`` metrics come back as NaN."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetricsError(f"{path}: metrics file not found") from None
    except json.JSONDecodeError as exc:
        raise MetricsError(f"{path}: not valid JSON: {exc}") from None
    return _nan_for_null(data)


def _nan_for_null(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _nan_for_null(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [
            float("nan") if item is None and key in METRIC_TITLES else _nan_for_null(item) for item in value
        ]
    if value is None and key in METRIC_TITLES:
        return float("nan")
    return value


# ------------------------------------------------------------------------------------ one test set


def write_evaluation(
    out_dir: str | Path,
    predictions: pd.DataFrame,
    metrics: Mapping[str, Any],
    *,
    predictions_format: str | None = "parquet",
    plots: bool = True,
) -> dict[str, Path]:
    """Write one test set's evaluation into ``out_dir``: predictions, metrics.json, report.md, plots.

    ``metrics`` is the result of :func:`~mfclip.metrics.evaluate_predictions` on ``predictions``.
    ``predictions_format``: "parquet", "csv", or None to leave an existing predictions file alone.
    Returns the written paths by kind (``predictions, metrics, report, roc, histogram``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if predictions_format is not None:
        if predictions_format not in ("parquet", "csv"):
            raise MetricsError(f"predictions format must be 'parquet' or 'csv', got {predictions_format!r}")
        written["predictions"] = write_predictions(out_dir / f"predictions.{predictions_format}", predictions)
        for other in PREDICTIONS_FILES:
            stale = out_dir / other
            if stale != written["predictions"] and stale.exists():
                stale.unlink()
    written["metrics"] = out_dir / METRICS_FILE
    atomic_write_json(written["metrics"], to_jsonable(metrics))
    written["report"] = out_dir / REPORT_FILE
    atomic_write_text(written["report"], render_test_set_report(metrics))
    if plots:
        written.update(_plot_test_set(out_dir, predictions, metrics))
    return written


def _plot_test_set(out_dir: Path, predictions: pd.DataFrame, metrics: Mapping[str, Any]) -> dict[str, Path]:
    from mfclip.metrics.plots import MAX_PLOT_POINTS, plot_roc, plot_score_histogram

    name = metrics.get("test_set") or out_dir.name
    threshold = float(metrics.get("threshold", 0.5))
    labels = predictions["label"].to_numpy()
    scores = predictions["p_fake"].to_numpy()
    ranking = Ranking(labels, scores)
    curves = []
    if ranking.n_fake and ranking.n_real:
        auc = metrics["overall"]["auc"]
        curves.append((f"overall (AUC {auc:.4f})", *roc_points(ranking, ranking.spec(), MAX_PLOT_POINTS)))
        for column in metrics.get("group_by", []):
            groups = group_specs(ranking, predictions, column, threshold)
            if not groups:
                continue
            for group, (spec, _) in groups.items():
                if spec.n_pos and spec.n_neg:
                    group_auc = metrics["groups"][column][group]["auc"]
                    points = roc_points(ranking, spec, MAX_PLOT_POINTS)
                    curves.append((f"{group} (AUC {group_auc:.4f})", *points))
            break  # one grouping column per plot keeps it readable
    return {
        "roc": plot_roc(curves, out_dir / "roc.png", title=f"ROC: {name}"),
        "histogram": plot_score_histogram(
            labels, scores, out_dir / "histogram.png", threshold=threshold, title=f"P(fake): {name}"
        ),
    }


def format_value(value: Any, ci: Sequence[float] | None = None, digits: int = 4) -> str:
    """A metric for a table: ``0.9512``, with ``[low, high]`` when an interval is given, ``n/a`` if NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    text = f"{float(value):.{digits}f}"
    if ci is not None and all(c is not None and not math.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_cells(values: Mapping[str, Any]) -> list[str]:
    ci = values.get("ci") or {}
    return [format_value(values.get(name), ci.get(name)) for name in METRIC_TITLES]


def _describe(metrics: Mapping[str, Any]) -> list[str]:
    overall = metrics["overall"]
    lines = [
        f"{overall['n']:,} predictions: {overall['n_real']:,} real, {overall['n_fake']:,} fake. "
        f"A row counts as fake when P(fake) > {metrics.get('threshold', 0.5):g} (ACC, real-ACC, fake-ACC).",
    ]
    boot = metrics.get("bootstrap")
    if boot:
        level = 100 * (1 - boot["alpha"])
        lines.append(
            f"Brackets: {level:g}% bootstrap percentile intervals from {boot['n_resamples']} resamples "
            f"({'stratified by class' if boot.get('stratified') else 'not stratified'}, seed {boot['seed']})."
        )
    return lines


def render_test_set_report(metrics: Mapping[str, Any]) -> str:
    """Markdown tables of one test set: overall (frame and video level) and each grouping column."""
    name = metrics.get("test_set") or "predictions"
    parts = [f"# Evaluation: {name}", "", *_describe(metrics), ""]
    header = ["level", *METRIC_TITLES.values(), "reals", "fakes"]
    rows = [["frame", *_metric_cells(metrics["overall"]), *_counts(metrics["overall"])]]
    video = metrics.get("video")
    if video:
        rows.append(
            [f"video ({video['aggregate']})", *_metric_cells(video["overall"]), *_counts(video["overall"])]
        )
    parts += ["## Overall", "", markdown_table(header, rows), ""]
    for level, source in (("", metrics), (" (videos)", video)):
        if not source:
            continue
        for column, groups in source.get("groups", {}).items():
            header = [column, *METRIC_TITLES.values(), "reals", "fakes"]
            rows = [[group, *_metric_cells(values), *_counts(values)] for group, values in groups.items()]
            parts += [f"## Per {column}{level}", "", markdown_table(header, rows), ""]
    if metrics.get("groups"):
        parts += [
            "Each group holds its fakes plus the reals of that group when there are any, "
            "otherwise all reals of the test set (reals marked *shared*).",
            "",
        ]
    return "\n".join(parts)


def _counts(values: Mapping[str, Any]) -> list[str]:
    reals = format_value(values.get("n_real"))
    if values.get("reals") == "shared":
        reals += " (shared)"
    return [reals, format_value(values.get("n_fake"))]


# ------------------------------------------------------------------------------------------- a run


def write_run_report(
    eval_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    metric: str = "auc",
    plots: bool = True,
) -> dict[str, Path]:
    """Write the run-level ``metrics.json``, ``report.md`` and ``roc.png`` of ``eval_dir``.

    ``results``: ``{test_set: metrics}``; None reads every ``eval_dir/<test_set>/metrics.json``.
    ``metric`` is the one shown per group across test sets. Returns the written paths by kind.
    """
    eval_dir = Path(eval_dir)
    if metric not in METRIC_TITLES:
        raise MetricsError(f"unknown metric {metric!r}; choose from {list(METRIC_TITLES)}")
    if results is None:
        results = {}
        for path in sorted(eval_dir.glob("*/metrics.json")):
            data = read_metrics(path)
            results[data.get("test_set") or path.parent.name] = data
        if not results:
            raise MetricsError(f"{eval_dir}: no <test_set>/metrics.json found to report on")
    summary = {
        "format": RUN_METRICS_FORMAT,
        "format_version": 1,
        "primary_metric": metric,
        "test_sets": {name: {"dir": safe_name(name), **values} for name, values in results.items()},
        "mean": {
            name: _nanmean(values["overall"][name] for values in results.values()) for name in METRIC_TITLES
        },
    }
    written = {"metrics": eval_dir / METRICS_FILE, "report": eval_dir / REPORT_FILE}
    atomic_write_json(written["metrics"], to_jsonable(summary))
    atomic_write_text(written["report"], render_run_report(results, metric=metric))
    if plots:
        curves = []
        for name in results:
            path = find_test_set_predictions(eval_dir / safe_name(name))
            if path is None:
                continue
            frame = load_predictions(path, columns=())
            ranking = Ranking(frame["label"].to_numpy(), frame["p_fake"].to_numpy())
            if ranking.n_fake and ranking.n_real:
                from mfclip.metrics.plots import MAX_PLOT_POINTS

                fpr, tpr = roc_points(ranking, ranking.spec(), MAX_PLOT_POINTS)
                curves.append((f"{name} (AUC {results[name]['overall']['auc']:.4f})", fpr, tpr))
        if curves:
            from mfclip.metrics.plots import plot_roc

            written["roc"] = plot_roc(curves, eval_dir / "roc.png", title="ROC per test set")
    return written


def _nanmean(values: Iterable[float]) -> float:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")


def render_run_report(results: Mapping[str, Mapping[str, Any]], metric: str = "auc") -> str:
    """Markdown: one row per test set with every metric, then ``metric`` per group across test sets."""
    title = METRIC_TITLES[metric]
    names = list(results)
    any_video = any(values.get("video") for values in results.values())
    header = ["test set", *METRIC_TITLES.values(), *(["video AUC"] if any_video else []), "reals", "fakes"]
    rows = []
    for name, values in results.items():
        video = values.get("video")
        video_cell = (
            [format_value(video["overall"]["auc"], (video["overall"].get("ci") or {}).get("auc"))]
            if video
            else ["n/a"]
        )
        rows.append(
            [
                name,
                *_metric_cells(values["overall"]),
                *(video_cell if any_video else []),
                *_counts(values["overall"]),
            ]
        )
    if len(results) > 1:
        mean = [_nanmean(v["overall"][m] for v in results.values()) for m in METRIC_TITLES]
        video_mean = _nanmean(v["video"]["overall"]["auc"] for v in results.values() if v.get("video"))
        rows.append(
            [
                "**mean**",
                *(format_value(m) for m in mean),
                *([format_value(video_mean)] if any_video else []),
                "",
                "",
            ]
        )
    first = next(iter(results.values()))
    parts = ["# Evaluation report", "", f"{len(results)} test set(s); primary metric: {title}.", ""]
    parts += [*_describe(first)[1:], "", "## Test sets", "", markdown_table(header, rows), ""]

    columns: list[str] = []
    for values in results.values():
        columns += [c for c in values.get("groups", {}) if c not in columns]
    for column in columns:
        groups: list[str] = []
        for values in results.values():
            groups += [g for g in values.get("groups", {}).get(column, {}) if g not in groups]
        table_rows = []
        for group in groups:
            cells = []
            for name in names:
                values = results[name].get("groups", {}).get(column, {}).get(group)
                cells.append(
                    "—"
                    if values is None
                    else format_value(values[metric], (values.get("ci") or {}).get(metric))
                )
            table_rows.append([group, *cells])
        parts += [f"## {title} per {column}", "", markdown_table([column, *names], table_rows), ""]
    parts += ["Per-test-set details: `<test_set>/report.md`.", ""]
    return "\n".join(parts)


def find_test_set_predictions(directory: str | Path) -> Path | None:
    """The predictions file of one test-set directory, or None."""
    for name in PREDICTIONS_FILES:
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def find_predictions(run: str | Path) -> dict[str, Path]:
    """Predictions files of a run, by test set.

    ``run`` may be a run directory (``RUN/eval/<test_set>/predictions.*``), its ``eval`` directory,
    one test-set directory, or a predictions file itself. The test set's name is read from its
    ``metrics.json`` when present, else the directory name.
    """
    run = Path(run)
    if run.is_file():
        return {_test_set_name(run.parent): run}
    if not run.is_dir():
        raise PredictionsError(f"{run}: no such run directory or predictions file")
    eval_dir = run / EVAL_DIR if (run / EVAL_DIR).is_dir() else run
    single = find_test_set_predictions(eval_dir)
    if single is not None:
        return {_test_set_name(eval_dir): single}
    found = {}
    for directory in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
        path = find_test_set_predictions(directory)
        if path is not None:
            found[_test_set_name(directory)] = path
    if not found:
        raise PredictionsError(
            f"{run}: no predictions found (expected {eval_dir}/<test_set>/predictions.parquet or .csv)"
        )
    return found


def _test_set_name(directory: Path) -> str:
    metrics = directory / METRICS_FILE
    if metrics.is_file():
        try:
            name = json.loads(metrics.read_text(encoding="utf-8")).get("test_set")
        except (json.JSONDecodeError, AttributeError, OSError):
            name = None
        if isinstance(name, str) and name:
            return name
    return directory.name

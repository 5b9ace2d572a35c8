"""Side-by-side tables of several runs, recomputed from their saved predictions (never from a model)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from mfclip.metrics._ranking import MetricsError
from mfclip.metrics.grouped import (
    DEFAULT_GROUP_BY,
    OVERALL,
    check_group_by,
    evaluate_predictions,
    metric_rows,
)
from mfclip.metrics.report import (
    CATEGORY_COLUMNS,
    EVAL_DIR,
    LOWER_IS_BETTER,
    METRIC_TITLES,
    find_predictions,
    format_value,
    load_predictions,
    markdown_table,
    prediction_columns,
)
from mfclip.utils.io import atomic_write_text

KEY_COLUMNS = ["test_set", "level", "group_by", "group"]


def run_labels(runs: Sequence[str | Path]) -> list[str]:
    """Short unique column names for runs: the run directory's name, also for ``RUN/eval``,
    ``RUN/eval/<test_set>`` or a predictions file in it; repeated names get ``#2``, ``#3``..."""
    labels = []
    for run in runs:
        path = Path(run)
        if path.is_file():
            path = path.parent
        if path.parent.name == EVAL_DIR:  # a test-set directory: name it after its run
            path = path.parent.parent
        elif path.name == EVAL_DIR:
            path = path.parent
        label = path.name or str(run)
        base, suffix = label, 2
        while label in labels:
            label = f"{base}#{suffix}"
            suffix += 1
        labels.append(label)
    return labels


def compare_runs(
    runs: Sequence[str | Path],
    *,
    metric: str = "auc",
    group_by: Sequence[str] | None = None,
    threshold: float = 0.5,
    video: bool = True,
    video_aggregate: str = "mean",
    bootstrap: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per (test set, level, grouping column, group), one column per run, holding ``metric``.

    Rows: each test set's overall frame-level value, its video-level value (when it has video ids),
    then its groups. With ``bootstrap`` > 0, ``<run> low`` / ``<run> high`` columns hold the interval.
    A ``group_by`` column that none of the predictions has is refused; by default (None) they are
    grouped by those of :data:`~mfclip.metrics.grouped.DEFAULT_GROUP_BY` they have.
    """
    if metric not in METRIC_TITLES:
        raise MetricsError(f"unknown metric {metric!r}; choose from {list(METRIC_TITLES)}")
    if not runs:
        raise MetricsError("no runs given")
    labels = run_labels(runs)
    plan = [
        (label, name, path)
        for label, run in zip(labels, runs, strict=True)
        for name, path in find_predictions(run).items()
    ]
    if group_by is None:
        group_by = DEFAULT_GROUP_BY
    else:
        check_group_by(group_by, (c for _, _, path in plan for c in prediction_columns(path)), "predictions")
    columns = [*CATEGORY_COLUMNS, *group_by]
    tables = []
    for label, name, path in tqdm(plan, desc="evaluating", unit="test set", disable=len(plan) < 2):
        predictions = load_predictions(path, columns=columns)
        if "test_set" in predictions.columns:
            predictions = predictions.drop(columns="test_set")
        metrics = evaluate_predictions(
            predictions,
            group_by=group_by,
            threshold=threshold,
            bootstrap=bootstrap,
            seed=seed,
            alpha=alpha,
            video=video,
            video_aggregate=video_aggregate,
            name=name,
        )
        rows = metric_rows(metrics, "frame") + [
            r for r in metric_rows(metrics, "video") if r["group"] == OVERALL
        ]
        for row in rows:
            entry: dict[str, Any] = {
                "test_set": name,
                **{k: row[k] for k in KEY_COLUMNS[1:]},
                label: row[metric],
            }
            if bootstrap:
                entry[f"{label} low"] = row.get(f"{metric}_low", math.nan)
                entry[f"{label} high"] = row.get(f"{metric}_high", math.nan)
            tables.append(entry)
    frame = pd.DataFrame(tables)
    value_columns = [c for c in frame.columns if c not in KEY_COLUMNS]
    # Merge the runs' rows on the row key, keeping the order in which rows first appear.
    frame["_order"] = frame.groupby(KEY_COLUMNS, sort=False).ngroup()
    merged = frame.groupby(KEY_COLUMNS, sort=False, dropna=False)[[*value_columns, "_order"]].first()
    merged = merged.sort_values("_order").drop(columns="_order").reset_index()
    ordered = [c for label in labels for c in (label, f"{label} low", f"{label} high") if c in merged.columns]
    return merged[[*KEY_COLUMNS, *ordered]]


def render_comparison(table: pd.DataFrame, runs: Sequence[str], metric: str = "auc") -> str:
    """Markdown: the overall table (rows = test sets, plus the mean), video level, then one table per
    grouping column (rows = test set / group); the best run of each row in bold."""
    title = METRIC_TITLES[metric]
    parts = [f"# {title} by run", "", f"Recomputed from saved predictions. Columns: {', '.join(runs)}.", ""]

    def cells(row: pd.Series) -> list[str]:
        values = [row.get(run) for run in runs]
        finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        best = (min(finite) if metric in LOWER_IS_BETTER else max(finite)) if len(finite) > 1 else None
        out = []
        for run, value in zip(runs, values, strict=True):
            ci = (row.get(f"{run} low"), row.get(f"{run} high")) if f"{run} low" in row.index else None
            text = format_value(value, ci)
            out.append(f"**{text}**" if best is not None and value == best else text)
        return out

    sections = [("Overall (frame level)", "frame", ""), ("Video level", "video", "")]
    for caption, level, column in sections:
        subset = table[(table["level"] == level) & (table["group_by"] == column)]
        if subset.empty:
            continue
        rows = [[row["test_set"], *cells(row)] for _, row in subset.iterrows()]
        # The mean runs over the test sets every run has, so that runs stay comparable.
        common = subset[subset[list(runs)].notna().all(axis=1)]
        if len(subset) > 1 and len(common):
            caption_mean = "**mean**" if len(common) == len(subset) else f"**mean of {len(common)} common**"
            rows.append([caption_mean, *cells(pd.Series({run: common[run].mean() for run in runs}))])
        parts += [f"## {caption}", "", markdown_table(["test set", *runs], rows), ""]
    for column in [c for c in dict.fromkeys(table["group_by"]) if c]:
        subset = table[(table["level"] == "frame") & (table["group_by"] == column)]
        rows = [[f"{row['test_set']} / {row['group']}", *cells(row)] for _, row in subset.iterrows()]
        parts += [f"## Per {column}", "", markdown_table([f"test set / {column}", *runs], rows), ""]
    return "\n".join(parts)


def write_comparison(table: pd.DataFrame, markdown: str, out: str | Path) -> tuple[Path, Path]:
    """Write the markdown to ``out`` and the table as CSV beside it (same name, ``.csv``)."""
    out = Path(out)
    csv_path = out.with_suffix(".csv") if out.suffix != ".csv" else out.with_suffix(".table.csv")
    atomic_write_text(out, markdown)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    atomic_write_text(csv_path, buffer.getvalue())
    return out, csv_path

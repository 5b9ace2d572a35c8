"""Statistics of a comparison trained over several seeds: mean ± sd per config, paired differences.

A multi-seed comparison has, for every config ("column") and training seed, one run whose metrics are
recomputed from its saved predictions (:func:`mfclip.metrics.compare.compare_runs`). From those values:

- :func:`seed_statistics` gives, per table row (test set, level, group) and column, the number of
  seeds, the mean and the sample standard deviation across seeds, and, against the column's reference,
  the **paired** differences d_s = value(column, s) − value(reference, s) over the seeds both have: their
  mean, the Student-t interval d̄ ± t(1 − α/2, n − 1) · sd(d) / √n and the two-sided p-value of the
  paired t-test (H0: mean difference 0). This interval reflects how much training varies with the seed
  on this one test set.
- :func:`paired_bootstrap` gives the percentile interval of the mean difference over seeds under
  resampling of the **test images**: each replicate draws reals and fakes with replacement (stratified
  by class) once, and that same draw re-weights the predictions of every run, so the difference is
  paired by image as well as by seed. This interval reflects the finite test set, not training.

Definitions and an example are in ``docs/experiments.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mfclip.metrics._ranking import METRIC_NAMES, CurveSpec, MetricsError, Ranking
from mfclip.metrics.bootstrap import CHUNK_ELEMENTS, Interval, percentile_interval

KEY_COLUMNS = ["test_set", "level", "group_by", "group"]
MEAN_TEST_SET = "mean"  # the row holding each run's mean over the overall frame-level rows of its test sets
STAT_COLUMNS = [
    "column",
    "reference",
    "n",
    "mean",
    "sd",
    "diff",
    "diff_sd",
    "diff_low",
    "diff_high",
    "p_value",
    "n_paired",
]


def with_mean_row(table: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """``table`` (rows: test set, level, group; one column per run) plus a row per run holding the mean
    of its overall frame-level values over the test sets (test set ``mean``)."""
    overall = table[(table["level"] == "frame") & (table["group_by"] == "")]
    if overall.empty:
        return table
    row = {"test_set": MEAN_TEST_SET, "level": "frame", "group_by": "", "group": "overall"}
    row.update({run: overall[run].mean(skipna=False) for run in runs if run in overall.columns})
    return pd.concat([table, pd.DataFrame([row])], ignore_index=True)


def seed_statistics(
    table: pd.DataFrame,
    columns: Mapping[str, Mapping[int, str]],
    references: Mapping[str, str],
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mean ± sd across seeds and the paired t-interval against each column's reference.

    ``table``: rows keyed by :data:`KEY_COLUMNS`, one value column per run. ``columns`` maps a config
    column to ``{seed: run}``; ``references`` maps a column to the column it is compared with (a column
    that is its own reference gets no difference). Returns one row per (table row, column) with
    :data:`STAT_COLUMNS`; undefined values (fewer than two seeds, no common seed) are NaN.
    """
    if not 0 < alpha < 1:
        raise MetricsError(f"alpha must lie in (0, 1), got {alpha}")
    missing = [run for seeds in columns.values() for run in seeds.values() if run not in table.columns]
    if missing:
        raise MetricsError(f"runs without values in the table: {', '.join(missing)}")
    records = []
    for _, row in table.iterrows():
        key = {k: row[k] for k in KEY_COLUMNS}
        for column, seeds in columns.items():
            values = _values(row, seeds)
            reference = references.get(column, column)
            record = {
                **key,
                "column": column,
                "reference": reference,
                "n": int(np.isfinite(list(values.values())).sum()),
                **dict.fromkeys(["diff", "diff_sd", "diff_low", "diff_high", "p_value"], math.nan),
                "n_paired": 0,
            }
            finite = np.array([v for v in values.values() if math.isfinite(v)])
            record["mean"] = float(finite.mean()) if len(finite) else math.nan
            record["sd"] = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
            if reference != column:
                base = _values(row, columns[reference])
                common = sorted(s for s in values if s in base and math.isfinite(values[s] + base[s]))
                differences = np.array([values[s] - base[s] for s in common])
                record.update(_paired_t(differences, alpha))
            records.append(record)
    return pd.DataFrame(records, columns=[*KEY_COLUMNS, *STAT_COLUMNS])


def _values(row: pd.Series, seeds: Mapping[int, str]) -> dict[int, float]:
    out = {}
    for seed, run in seeds.items():
        value = row.get(run)
        out[seed] = float(value) if value is not None and not pd.isna(value) else math.nan
    return out


def _paired_t(differences: np.ndarray, alpha: float) -> dict[str, float | int]:
    n = len(differences)
    out: dict[str, float | int] = {"n_paired": n}
    if n == 0:
        return out
    mean = float(differences.mean())
    out["diff"] = mean
    if n < 2:
        return out
    sd = float(differences.std(ddof=1))
    out["diff_sd"] = sd
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    out["diff_low"], out["diff_high"] = mean - half, mean + half
    if sd > 0:
        t_value = mean / (sd / math.sqrt(n))
        out["p_value"] = float(2 * stats.t.sf(abs(t_value), n - 1))
    else:
        out["p_value"] = 1.0 if mean == 0 else 0.0
    return out


def paired_bootstrap(
    predictions: Mapping[str, Mapping[int, pd.DataFrame]],
    references: Mapping[str, str],
    metrics: Sequence[str] = ("auc",),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, Interval]]:
    """Percentile intervals of each column's mean difference (over common seeds) from its reference,
    resampling the test images: ``{metric: {column: Interval}}`` for every column whose reference is
    another column.

    ``predictions``: ``{column: {seed: frame}}`` of one test set, each frame with ``path``, ``label`` and
    ``p_fake`` for the same images. Replicate i uses its own random stream spawned from ``seed``.
    """
    if n_resamples < 1:
        raise MetricsError(f"n_resamples must be at least 1, got {n_resamples}")
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise MetricsError(f"unknown metrics {unknown}; choose from {list(METRIC_NAMES)}")
    frames = [(column, s, frame) for column, by_seed in predictions.items() for s, frame in by_seed.items()]
    if not frames:
        raise MetricsError("no predictions given")
    for column, s, frame in frames:
        if "path" not in frame.columns:
            raise MetricsError(f"{column} (seed {s}): predictions without a path column cannot be paired")
    first = frames[0][2].sort_values("path", kind="stable").reset_index(drop=True)
    labels = first["label"].to_numpy().astype(np.int8)
    fake_rows, real_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if not len(fake_rows) or not len(real_rows):
        raise MetricsError("a paired bootstrap needs reals and fakes in the test set")
    position = np.empty(len(labels), dtype=np.int64)  # a row's position among the rows of its class
    position[fake_rows] = np.arange(len(fake_rows))
    position[real_rows] = np.arange(len(real_rows))
    rankings: dict[tuple[str, int], tuple[CurveSpec, np.ndarray, np.ndarray]] = {}
    for column, s, frame in frames:
        aligned = frame.sort_values("path", kind="stable").reset_index(drop=True)
        if not aligned["path"].equals(first["path"]) or not np.array_equal(
            aligned["label"].to_numpy(), labels
        ):
            raise MetricsError(
                f"{column} (seed {s}) was scored on other images than {frames[0][0]} (seed {frames[0][1]}); "
                "a paired bootstrap needs the same test images in every run"
            )
        ranking = Ranking(labels, aligned["p_fake"].to_numpy())
        rankings[(column, s)] = (
            ranking.spec(),
            position[ranking.fake_rows],
            position[ranking.real_rows],
        )
    pairs = {
        column: (reference, sorted(set(predictions[column]) & set(predictions[reference])))
        for column, reference in references.items()
        if reference != column and column in predictions and reference in predictions
    }
    values = {(key, m): np.empty(n_resamples) for key in rankings for m in metrics}
    chunk = max(1, CHUNK_ELEMENTS // len(labels))
    streams = np.random.SeedSequence(seed).spawn(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        fake_w = np.empty((stop - start, len(fake_rows)))
        real_w = np.empty((stop - start, len(real_rows)))
        for row, stream in enumerate(streams[start:stop]):
            rng = np.random.default_rng(stream)
            fake_w[row] = np.bincount(
                rng.integers(0, len(fake_rows), len(fake_rows)), minlength=len(fake_rows)
            )
            real_w[row] = np.bincount(
                rng.integers(0, len(real_rows), len(real_rows)), minlength=len(real_rows)
            )
        for key, (spec, fake_order, real_order) in rankings.items():
            cumsum = np.zeros((stop - start, len(real_rows) + 1))
            np.cumsum(real_w[:, real_order], axis=1, out=cumsum[:, 1:])
            weighted = spec.weighted(fake_w[:, fake_order], cumsum)
            for m in metrics:
                values[(key, m)][start:stop] = weighted[m]
    out: dict[str, dict[str, Interval]] = {m: {} for m in metrics}
    for m in metrics:
        for column, (reference, common) in pairs.items():
            if not common:
                out[m][column] = Interval(math.nan, math.nan)
                continue
            differences = [values[((column, s), m)] - values[((reference, s), m)] for s in common]
            out[m][column] = percentile_interval(np.mean(differences, axis=0), alpha)
    return out


def _mean_sd(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def _difference(record: Mapping[str, float], digits: int, boot: Interval | None = None) -> str:
    diff = record["diff"]
    if not math.isfinite(diff):
        return "n/a"
    text = f"{diff:+.{digits}f}"
    if math.isfinite(record["diff_low"]):
        text += f" [{record['diff_low']:+.{digits}f}, {record['diff_high']:+.{digits}f}]"
    if math.isfinite(record["p_value"]):
        text += f" p={record['p_value']:.2f}"
    if boot is not None and math.isfinite(boot.low):
        text += f"; images [{boot.low:+.{digits}f}, {boot.high:+.{digits}f}]"
    return text


def render_seed_summary(
    statistics: Mapping[str, pd.DataFrame],
    columns: Sequence[str],
    seeds: Sequence[int],
    bootstrap: Mapping[str, Mapping[str, Mapping[str, Interval]]] | None = None,
    alpha: float = 0.05,
    digits: int = 3,
) -> str:
    """Markdown: per metric, one row per column with mean ± sd over seeds per test set (and their
    mean), then the paired differences from the reference; per generator / forgery type for the first
    metric. ``bootstrap``: ``{metric: {test_set: {column: Interval}}}`` from :func:`paired_bootstrap`."""
    from mfclip.metrics.report import METRIC_TITLES, markdown_table

    confidence = f"{100 * (1 - alpha):g} %"
    seed_text = ", ".join(str(s) for s in seeds)
    parts = []
    for index, (metric, table) in enumerate(statistics.items()):
        title = METRIC_TITLES[metric]
        overall = table[(table["level"] == "frame") & (table["group_by"] == "")]
        test_sets = list(dict.fromkeys(overall["test_set"]))
        by_key = {(r["test_set"], r["column"]): r for r in overall.to_dict("records")}
        references = {r["column"]: r["reference"] for r in overall.to_dict("records")}
        parts += [f"# {title} across seeds", ""]
        if index == 0:
            boot = (
                " Images: the paired bootstrap interval over test images (same draw for every run)."
                if bootstrap
                else ""
            )
            parts += [
                f"Training seeds {seed_text}. Each cell: mean ± sample sd over the seeds. Δ: mean paired "
                f"difference from the reference column over the seeds both have, its {confidence} Student-t "
                f"interval over seeds and the paired t-test's p-value.{boot} `mean`: each run's mean over "
                "the test sets.",
                "",
            ]
        rows = []
        for column in columns:
            cells = [
                _mean_sd(by_key[(t, column)]["mean"], by_key[(t, column)]["sd"], digits)
                if (t, column) in by_key
                else "n/a"
                for t in test_sets
            ]
            seeds_seen = max(
                (int(by_key[(t, column)]["n"]) for t in test_sets if (t, column) in by_key), default=0
            )
            rows.append([column, str(seeds_seen), *cells])
        parts += [markdown_table([f"config ({title})", "seeds", *test_sets], rows), ""]
        compared = [c for c in columns if references.get(c, c) != c]
        if compared:
            rows = []
            for column in compared:
                cells = []
                for t in test_sets:
                    record = by_key.get((t, column))
                    boot_interval = (bootstrap or {}).get(metric, {}).get(t, {}).get(column)
                    cells.append(_difference(record, digits, boot_interval) if record is not None else "n/a")
                rows.append([f"{column} − {references[column]}", *cells])
            parts += [markdown_table([f"Δ {title}", *test_sets], rows), ""]
        if index == 0:
            for grouping in [g for g in dict.fromkeys(table["group_by"]) if g]:
                groups = table[(table["level"] == "frame") & (table["group_by"] == grouping)]
                keys = list(dict.fromkeys(zip(groups["test_set"], groups["group"], strict=True)))
                lookup = {(r["test_set"], r["group"], r["column"]): r for r in groups.to_dict("records")}
                rows = [
                    [
                        column,
                        *(
                            _mean_sd(lookup[(t, g, column)]["mean"], lookup[(t, g, column)]["sd"], digits)
                            if (t, g, column) in lookup
                            else "n/a"
                            for t, g in keys
                        ),
                    ]
                    for column in columns
                ]
                header = [f"config ({title} per {grouping})", *(f"{t} / {g}" for t, g in keys)]
                parts += [f"## {title} per {grouping} across seeds", "", markdown_table(header, rows), ""]
    return "\n".join(parts)

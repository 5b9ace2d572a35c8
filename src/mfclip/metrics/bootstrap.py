"""Bootstrap percentile confidence intervals for the binary metrics.

Each replicate draws ``n`` rows with replacement (by default separately within the reals and within the
fakes, so every replicate keeps the test set's class counts). A replicate is represented by how many
times it drew each row, and the built-in metrics are computed from those counts on the rows sorted
once (see :mod:`mfclip.metrics._ranking`): exactly the metrics of the resampled data, in O(n) per
replicate and without sorting again. Replicates are processed in chunks of bounded size, and each one
has its own random stream derived from ``seed``, so intervals do not depend on the chunking.

Several sets of the same test set (overall, per generator, ...) are evaluated on the same replicates,
as a resample of the test set is one resample for every statistic computed from it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

from mfclip.metrics._ranking import METRIC_NAMES, CurveSpec, MetricsError, Ranking

# Bootstrap weight-matrix elements per chunk (replicates x rows): about 8 MiB per float64 matrix.
CHUNK_ELEMENTS = 1 << 20
#: The most resamples accepted. Intervals settle within a few thousand, and every resample keeps one
#: value per metric and group in memory, so a mistyped count must not exhaust it.
MAX_RESAMPLES = 100_000

MetricFn = Callable[[np.ndarray, np.ndarray], float]
K = TypeVar("K", bound=Hashable)


class Interval(NamedTuple):
    """A two-sided percentile interval (a JSON list ``[low, high]``)."""

    low: float
    high: float


def bootstrap_ci(
    labels: object,
    scores: object,
    metric_fns: Sequence[str] | Mapping[str, str | MetricFn] = ("auc", "ap", "eer", "acc"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    threshold: float = 0.5,
    stratified: bool = True,
) -> dict[str, Interval]:
    """Percentile ``1 - alpha`` bootstrap intervals of metrics of one set.

    ``metric_fns``: names of built-in metrics (``auc, ap, eer, acc, real_acc, fake_acc``), or a mapping
    from output name to a built-in name or a callable ``fn(labels, scores) -> float``. Built-in
    metrics use the fast weighted path; callables get the resampled arrays (slower, any metric).
    Replicates where a metric is undefined (a class absent when not stratified) are left out.
    """
    ranking = Ranking(labels, scores)
    if isinstance(metric_fns, Mapping):
        requested = dict(metric_fns)
    else:
        requested = {name: name for name in metric_fns}
    builtin = {out: fn for out, fn in requested.items() if isinstance(fn, str)}
    custom = {out: fn for out, fn in requested.items() if not isinstance(fn, str)}
    for out, fn in builtin.items():
        if fn not in METRIC_NAMES:
            raise MetricsError(
                f"bootstrap metric {out!r}: unknown metric {fn!r}; choose from {list(METRIC_NAMES)}"
            )
    result: dict[str, Interval] = {}
    if builtin:
        samples = bootstrap_samples(
            ranking, {"set": ranking.spec(threshold=threshold)}, n_resamples, seed, stratified
        )["set"]
        for out, fn in builtin.items():
            result[out] = percentile_interval(samples[fn], alpha)
    if custom:
        labels_array = np.asarray(labels)
        scores_array = np.asarray(scores)
        rows = np.concatenate([ranking.fake_rows, ranking.real_rows])
        values = {out: np.empty(n_resamples) for out in custom}
        for i, (fake_draw, real_draw) in enumerate(_draws(ranking, n_resamples, seed, stratified)):
            if stratified:
                picked = np.concatenate([ranking.fake_rows[fake_draw], ranking.real_rows[real_draw]])
            else:
                picked = rows[fake_draw]
            for out, fn in custom.items():
                try:
                    values[out][i] = fn(labels_array[picked], scores_array[picked])
                except ValueError:
                    values[out][i] = np.nan
        for out in custom:
            result[out] = percentile_interval(values[out], alpha)
    return {out: result[out] for out in requested}


def percentile_interval(values: np.ndarray, alpha: float) -> Interval:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles of the finite values (NaN, NaN when none)."""
    if not 0 < alpha < 1:
        raise MetricsError(f"alpha must lie in (0, 1), got {alpha}")
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Interval(float("nan"), float("nan"))
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high))


def check_resamples(n_resamples: int, name: str = "n_resamples", allow_zero: bool = True) -> None:
    """Refuse a resample count above :data:`MAX_RESAMPLES` or below 1 (0, "no intervals", where
    ``allow_zero``); the message names the setting ``name`` (a function argument or a CLI flag)."""
    lowest = 0 if allow_zero else 1
    if not lowest <= n_resamples <= MAX_RESAMPLES:
        meaning = " (0: no intervals)" if allow_zero else ""
        raise MetricsError(
            f"{name} must be from {lowest}{meaning} to {MAX_RESAMPLES} bootstrap resamples, got {n_resamples}"
        )


def bootstrap_samples(
    ranking: Ranking,
    specs: Mapping[K, CurveSpec],
    n_resamples: int,
    seed: int,
    stratified: bool = True,
) -> dict[K, dict[str, np.ndarray]]:
    """Metric values of every replicate of several sets of one ranking: ``{set: {metric: (R,)}}``."""
    check_resamples(n_resamples, allow_zero=False)
    out = {key: {name: np.empty(n_resamples) for name in METRIC_NAMES} for key in specs}
    chunk = max(1, CHUNK_ELEMENTS // max(1, ranking.n))
    draws = _draws(ranking, n_resamples, seed, stratified)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        fake_w = np.empty((stop - start, ranking.n_fake))
        real_w = np.empty((stop - start, ranking.n_real))
        for row in range(stop - start):
            fake_draw, real_draw = next(draws)
            if stratified:
                fake_w[row] = np.bincount(fake_draw, minlength=ranking.n_fake)
                real_w[row] = np.bincount(real_draw, minlength=ranking.n_real)
            else:
                counts = np.bincount(fake_draw, minlength=ranking.n)
                fake_w[row] = counts[: ranking.n_fake]
                real_w[row] = counts[ranking.n_fake :]
        cumsums: dict[int, np.ndarray] = {}
        for key, spec in specs.items():
            cache_key = -1 if spec.real_index is None else id(spec.real_index)
            if cache_key not in cumsums:
                selected = real_w if spec.real_index is None else real_w[:, spec.real_index]
                cumsum = np.zeros((stop - start, selected.shape[1] + 1))
                np.cumsum(selected, axis=1, out=cumsum[:, 1:])
                cumsums[cache_key] = cumsum
            values = spec.weighted(fake_w, cumsums[cache_key])
            for name in METRIC_NAMES:
                out[key][name][start:stop] = values[name]
    return out


def _draws(ranking: Ranking, n_resamples: int, seed: int, stratified: bool):
    """Per replicate: draws over fake ranks and over real ranks (stratified), or one draw over all rows
    (fakes first, then reals) returned as the first item."""
    for sequence in np.random.SeedSequence(seed).spawn(n_resamples):
        rng = np.random.default_rng(sequence)
        if stratified:
            yield (
                rng.integers(0, ranking.n_fake, ranking.n_fake),
                rng.integers(0, ranking.n_real, ranking.n_real),
            )
        else:
            yield rng.integers(0, ranking.n, ranking.n), None

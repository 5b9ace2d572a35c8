"""The ranking core behind every binary metric: sort the scores once, then score any subset or re-weighting.

A :class:`Ranking` sorts all rows by descending score and numbers the distinct scores ("bins": tied rows
share a bin). A :class:`CurveSpec` selects some fakes (the positives) and some reals (the negatives) of
that ranking; because selecting keeps the sorted order, no subset is ever sorted again.

The ROC curve of a selection is piecewise linear. Walking down the distinct scores, a bin holding
positives moves the curve from ``(F_before, T_prev)`` to ``(F_after, T)``, where ``F_before`` / ``F_after``
count the negatives scored strictly above / at least at that bin and ``T_prev`` / ``T`` the positives;
bins holding only negatives move it horizontally. So the whole curve, and with it AUC, AP and EER, follows
from the positives' bins plus two look-ups into the negatives' cumulative counts. With integer weights
(bootstrap resamples) every quantity is exactly that of the resampled data, without re-sorting.

All metric arrays are 2-D, ``(R, ...)``: ``R`` weightings (bootstrap replicates) at once, ``R = 1``
for the plain evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("auc", "ap", "eer", "acc", "real_acc", "fake_acc")
# Metrics that need both classes; ACC-type metrics only need the rows they count.
RANKING_METRICS: tuple[str, ...] = ("auc", "ap", "eer")


class MetricsError(ValueError):
    """Labels, scores or predictions are unusable; the message names the column, row or file."""


def as_labels(labels: object, name: str = "labels") -> np.ndarray:
    """Validate 0/1 labels (bool, int or float) and return them as ``int8``."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise MetricsError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.dtype == np.int8:
        values = array
    elif array.dtype == bool:
        return array.astype(np.int8)
    elif np.issubdtype(array.dtype, np.number):
        values = array
    else:
        try:
            values = array.astype(np.float64)
        except (TypeError, ValueError):
            raise MetricsError(
                f"{name}: labels must be 0 (real) or 1 (fake), got dtype {array.dtype}"
            ) from None
    bad = (values != 0) & (values != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MetricsError(
            f"{name}: labels must be 0 (real) or 1 (fake); row {row} holds {array[row].tolist()!r} "
            f"({int(bad.sum())} invalid rows)"
        )
    return values.astype(np.int8, copy=False)


def as_scores(scores: object, name: str = "scores") -> np.ndarray:
    """Validate finite-or-infinite, non-NaN scores; float32 stays float32, anything else becomes float64."""
    array = np.asarray(scores)
    if array.ndim != 1:
        raise MetricsError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.dtype not in (np.float32, np.float64):
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise MetricsError(f"{name}: scores must be numeric, got dtype {array.dtype}") from None
    nan = np.isnan(array)
    if nan.any():
        row = int(np.flatnonzero(nan)[0])
        raise MetricsError(f"{name}: {int(nan.sum())} scores are NaN (first at row {row})")
    return array


class Ranking:
    """All rows sorted by descending score, split by class, with tied scores sharing one bin."""

    def __init__(self, labels: object, scores: object) -> None:
        labels = as_labels(labels)
        scores = as_scores(scores)
        if len(labels) != len(scores):
            raise MetricsError(f"labels and scores differ in length ({len(labels)} vs {len(scores)})")
        self.n = len(scores)
        order = np.argsort(scores, kind="stable")[::-1]
        sorted_scores = scores[order]
        is_new = np.ones(self.n, dtype=bool)
        np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=is_new[1:])
        bins = np.cumsum(is_new, dtype=np.int64)
        bins -= 1
        self.bin_scores = sorted_scores[is_new]
        del sorted_scores, is_new
        is_fake = labels[order].astype(bool)
        # Original row numbers of the fakes / reals, best-scored first, and their bins (ascending).
        self.fake_rows = order[is_fake]
        self.real_rows = order[~is_fake]
        self.fake_bins = bins[is_fake]
        self.real_bins = bins[~is_fake]

    @property
    def n_fake(self) -> int:
        return len(self.fake_rows)

    @property
    def n_real(self) -> int:
        return len(self.real_rows)

    def bins_above(self, threshold: float) -> int:
        """Number of bins whose score is strictly above ``threshold`` (bins ``0 .. k-1``)."""
        return int(np.searchsorted(-self.bin_scores, -threshold, side="left"))

    def spec(
        self,
        fake_index: np.ndarray | None = None,
        real_index: np.ndarray | None = None,
        threshold: float = 0.5,
    ) -> CurveSpec:
        """Select fakes / reals by their position in :attr:`fake_rows` / :attr:`real_rows` (None = all)."""
        pos_bins = self.fake_bins if fake_index is None else self.fake_bins[fake_index]
        neg_bins = self.real_bins if real_index is None else self.real_bins[real_index]
        if len(pos_bins):
            starts = np.flatnonzero(np.concatenate(([True], pos_bins[1:] != pos_bins[:-1])))
        else:
            starts = np.zeros(0, dtype=np.int64)
        block_bins = pos_bins[starts]
        sizes = np.diff(np.append(starts, len(pos_bins))).astype(np.float64)
        k = self.bins_above(threshold)
        neg_before = np.searchsorted(neg_bins, block_bins, side="left")
        neg_after = np.searchsorted(neg_bins, block_bins, side="right")
        return CurveSpec(
            fake_index=fake_index,
            real_index=real_index,
            block_starts=starts,
            block_sizes=sizes,
            neg_before=neg_before,
            neg_after=neg_after,
            blocks_above=int(np.searchsorted(block_bins, k, side="left")),
            negs_above=int(np.searchsorted(neg_bins, k, side="left")),
            n_pos=len(pos_bins),
            n_neg=len(neg_bins),
            pos_ties=len(starts) < len(pos_bins),
            cross_ties=bool(np.any(neg_before != neg_after)),
        )


@dataclass
class CurveSpec:
    """One evaluated set (positives and negatives of a :class:`Ranking`) and its static look-ups."""

    fake_index: np.ndarray | None
    real_index: np.ndarray | None
    block_starts: np.ndarray  # start of each run of tied positives
    block_sizes: np.ndarray  # positives per run
    neg_before: np.ndarray  # negatives scored strictly above each run
    neg_after: np.ndarray  # negatives scored at or above each run
    blocks_above: int  # runs scored strictly above the threshold
    negs_above: int  # negatives scored strictly above the threshold
    n_pos: int
    n_neg: int
    pos_ties: bool  # some positives share a score
    cross_ties: bool  # some positive shares its score with a negative

    def point(self) -> dict[str, np.ndarray]:
        """Metrics of the unweighted set, as arrays of shape ``(1,)``."""
        after = self.neg_after[None, :].astype(np.float64)
        return curve_metrics(
            self.block_sizes[None, :],
            self.neg_before[None, :].astype(np.float64) if self.cross_ties else after,
            after,
            n_neg=np.array([float(self.n_neg)]),
            tp=np.array([self.block_sizes[: self.blocks_above].sum()]),
            fp=np.array([float(self.negs_above)]),
        )

    def weighted(self, fake_weights: np.ndarray, real_cumsum: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics under row weights: ``fake_weights`` ``(R, n_fake)`` over all fakes of the ranking,
        ``real_cumsum`` ``(R, n_neg + 1)``: the cumulative weights of this set's negatives, from 0."""
        weights = fake_weights if self.fake_index is None else fake_weights[:, self.fake_index]
        if self.pos_ties:
            blocks = np.add.reduceat(weights, self.block_starts, axis=1)
        else:
            blocks = weights
        after = real_cumsum[:, self.neg_after]
        return curve_metrics(
            blocks,
            real_cumsum[:, self.neg_before] if self.cross_ties else after,
            after,
            n_neg=real_cumsum[:, -1],
            tp=blocks[:, : self.blocks_above].sum(axis=1),
            fp=real_cumsum[:, self.negs_above],
        )


def curve_metrics(
    blocks: np.ndarray,
    neg_before: np.ndarray,
    neg_after: np.ndarray,
    n_neg: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
) -> dict[str, np.ndarray]:
    """AUC, AP, EER and the threshold accuracies from per-run positive weights and negative counts.

    ``blocks``, ``neg_before``, ``neg_after``: ``(R, m)`` (``neg_before`` may be ``neg_after`` itself
    when no positive ties a negative); ``n_neg``, ``tp``, ``fp``: ``(R,)``.
    """
    n_rep, m = blocks.shape
    pos_cum = np.cumsum(blocks, axis=1)
    n_pos = pos_cum[:, -1].copy() if m else np.zeros(n_rep)
    defined = (n_pos > 0) & (n_neg > 0)
    nan = np.full(n_rep, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        fake_acc = tp / n_pos
        real_acc = (n_neg - fp) / n_neg
        acc = (tp + n_neg - fp) / (n_pos + n_neg)
        if defined.any():
            # Mann-Whitney: each positive beats the negatives below it and ties half of those at its score.
            if neg_before is neg_after:
                above_twice = 2.0 * np.einsum("ij,ij->i", blocks, neg_after)
            else:
                above_twice = np.einsum("ij,ij->i", blocks, neg_before) + np.einsum(
                    "ij,ij->i", blocks, neg_after
                )
            auc = 1.0 - 0.5 * above_twice / (n_pos * n_neg)
            # Step-wise AP: recall gain of each run of positives times the precision at its end.
            precision = pos_cum / np.maximum(pos_cum + neg_after, 1e-300)
            ap = np.einsum("ij,ij->i", blocks, precision) / n_pos
            eer = _equal_error_rate(blocks, pos_cum, neg_before, neg_after, n_pos, n_neg)
        else:
            auc = ap = eer = nan
    return {
        "auc": np.where(defined, auc, nan),
        "ap": np.where(defined, ap, nan),
        "eer": np.where(defined, eer, nan),
        "acc": acc,
        "real_acc": real_acc,
        "fake_acc": fake_acc,
        "n_fake": n_pos,
        "n_real": n_neg,
        "tp": tp,
        "fp": fp,
    }


def _equal_error_rate(
    blocks: np.ndarray,
    pos_cum: np.ndarray,
    neg_before: np.ndarray,
    neg_after: np.ndarray,
    n_pos: np.ndarray,
    n_neg: np.ndarray,
) -> np.ndarray:
    """FPR where the piecewise-linear ROC curve crosses FNR = FPR, interpolated on the crossing segment.

    Each run k of positives contributes two vertices, ``before_k = (F_before, T_prev)`` and
    ``after_k = (F_after, T)``; horizontal segments join ``after_{k-1}`` to ``before_k``, and the curve
    ends at ``(N, P)``. ``gap = FNR - FPR`` never increases along the curve, so the crossing lies just
    before the first ``after`` vertex with ``gap <= 0`` (found by bisection): on its sloped segment if
    its ``before`` vertex has not crossed yet, otherwise on the horizontal segment leading to it.
    Gaps are scaled by ``P * N`` so that integer counts compare exactly.
    """
    n_rep, m = blocks.shape
    rows = np.arange(n_rep)
    p, n = n_pos, n_neg

    def gap(fp: np.ndarray, tp: np.ndarray) -> np.ndarray:
        return p * n - tp * n - fp * p

    # First run whose `after` vertex has gap <= 0, or m when none has (vectorised bisection over rows).
    low = np.zeros(n_rep, dtype=np.int64)
    high = np.full(n_rep, m, dtype=np.int64)
    while True:
        active = low < high
        if not active.any():
            break
        mid = np.minimum((low + high) // 2, m - 1)
        crossed = gap(neg_after[rows, mid], pos_cum[rows, mid]) <= 0
        high = np.where(active & crossed, mid, high)
        low = np.where(active & ~crossed, mid + 1, low)
    at_end = low == m  # no run crossed: the crossing is on the final horizontal segment
    k = np.minimum(low, m - 1)
    before_f = np.where(at_end, n, neg_before[rows, k])
    before_t = np.where(at_end, p, pos_cum[rows, k] - blocks[rows, k])
    after_f = np.where(at_end, n, neg_after[rows, k])
    after_t = np.where(at_end, p, pos_cum[rows, k])
    previous = np.where(at_end, k, k - 1)  # the `after` vertex that starts the horizontal segment
    origin = previous < 0
    safe = np.maximum(previous, 0)
    prev_f = np.where(origin, 0.0, neg_after[rows, safe])
    prev_t = np.where(origin, 0.0, pos_cum[rows, safe])

    gap_before = gap(before_f, before_t)
    horizontal = gap_before <= 0
    x0 = np.where(horizontal, prev_f, before_f)
    g0 = np.where(horizontal, gap(prev_f, prev_t), gap_before)
    x1 = np.where(horizontal, before_f, after_f)
    g1 = np.where(horizontal, gap_before, gap(after_f, after_t))
    return (x0 + g0 / (g0 - g1) * (x1 - x0)) / n


def scalar(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """First replicate of a metrics dict as plain floats."""
    return {name: float(values[0]) for name, values in metrics.items()}

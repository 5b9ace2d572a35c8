"""Binary detection metrics on P(fake) scores: AUC, AP, EER and accuracies at a threshold.

Conventions (label 1 = fake is the positive class, a higher score means "more likely fake"):

- **AUC**: area under the ROC curve with tied scores forming one sloped segment, i.e. the Mann-Whitney
  statistic with mid-ranks; equal to ``sklearn.metrics.roc_auc_score``.
- **AP**: step-wise average precision over the distinct scores, ``sum_k (R_k - R_{k-1}) P_k``, ties
  grouped; equal to ``sklearn.metrics.average_precision_score``.
- **EER**: the ROC curve is the polyline through ``(0, 0)``, the (FPR, TPR) operating point of every
  distinct score used as threshold, and ``(1, 1)``. It meets the line FNR = FPR (TPR = 1 - FPR) in
  exactly one point; the EER is the FPR (= FNR) there. On the crossing segment between two operating
  points the value is linearly interpolated, so it needs no root finding and does not depend on
  which nearest point one picks.
- **ACC** at ``threshold``: a row is called fake when its score is strictly above the threshold
  (like an argmax over two softmax outputs, and ``torchmetrics``); ``real_acc`` is the true-negative
  rate, ``fake_acc`` the true-positive rate at that threshold.

A set holding only one class has no AUC, AP or EER: they are NaN (``null`` in JSON) and an
:class:`UndefinedMetricWarning` says why. Everything runs in O(n log n) time (one sort) and O(n) memory.
"""

from __future__ import annotations

import warnings

import numpy as np

from mfclip.metrics._ranking import CurveSpec, MetricsError, Ranking, scalar


class UndefinedMetricWarning(UserWarning):
    """A metric needs both classes but the evaluated set holds only one; it is reported as NaN."""


def compute_metrics(
    labels: object, scores: object, threshold: float = 0.5, name: str = ""
) -> dict[str, float]:
    """All binary metrics of one set.

    Returns ``auc, ap, eer, acc, real_acc, fake_acc`` (floats, NaN when undefined) and the counts
    ``n, n_real, n_fake, tp, fp, tn, fn`` (ints; positives are fakes, predicted when score > threshold).
    ``name`` only labels the warning raised for a single-class set.
    """
    ranking = Ranking(labels, scores)
    result = scalar(ranking.spec(threshold=threshold).point())
    warn_if_undefined(result, name or "evaluated set")
    return finalize(result)


def finalize(values: dict[str, float]) -> dict[str, float | int]:
    """Order the metric dict and turn counts into ints."""
    n_fake, n_real = values["n_fake"], values["n_real"]
    tp, fp = values["tp"], values["fp"]
    out: dict[str, float | int] = {
        name: values[name] for name in ("auc", "ap", "eer", "acc", "real_acc", "fake_acc")
    }
    out.update(
        n=round(n_fake + n_real),
        n_real=round(n_real),
        n_fake=round(n_fake),
        tp=round(tp),
        fp=round(fp),
        tn=round(n_real - fp),
        fn=round(n_fake - tp),
    )
    return out


def warn_if_undefined(values: dict[str, float], name: str) -> None:
    if values["n_fake"] > 0 and values["n_real"] > 0:
        return
    missing = "fake" if values["n_fake"] == 0 else "real"
    if values["n_fake"] == 0 and values["n_real"] == 0:
        missing = "any"
    warnings.warn(
        f"{name}: no {missing} rows, so AUC, AP and EER are undefined (reported as NaN)",
        UndefinedMetricWarning,
        stacklevel=3,
    )


def roc_auc(labels: object, scores: object) -> float:
    """Area under the ROC curve (ties count one half), NaN with a warning for a single-class set."""
    return float(compute_metrics(labels, scores)["auc"])


def average_precision(labels: object, scores: object) -> float:
    """Step-wise average precision with tied scores grouped, NaN with a warning for a single-class set."""
    return float(compute_metrics(labels, scores)["ap"])


def equal_error_rate(labels: object, scores: object) -> float:
    """The EER as defined in this module's docstring, NaN with a warning for a single-class set."""
    return float(compute_metrics(labels, scores)["eer"])


def roc_curve(labels: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(fpr, tpr)`` of the piecewise-linear ROC curve used by AUC and EER.

    Starts at (0, 0), ends at (1, 1); collinear points are dropped. Raises :class:`ValueError` for a
    single-class set (there is no curve to draw).
    """
    ranking = Ranking(labels, scores)
    return roc_points(ranking, ranking.spec())


def roc_points(
    ranking: Ranking, spec: CurveSpec, max_points: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ROC vertices of one selection of a ranking; thinned to about ``max_points`` when given."""
    if spec.n_pos == 0 or spec.n_neg == 0:
        raise MetricsError("a ROC curve needs both real and fake rows")
    pos_cum = np.cumsum(spec.block_sizes)
    m = len(pos_cum)
    fpr = np.empty(2 * m + 2)
    tpr = np.empty(2 * m + 2)
    fpr[0] = tpr[0] = 0.0
    fpr[1:-1:2] = spec.neg_before
    fpr[2:-1:2] = spec.neg_after
    tpr[1:-1:2] = pos_cum - spec.block_sizes
    tpr[2:-1:2] = pos_cum
    fpr[-1] = spec.n_neg
    tpr[-1] = spec.n_pos
    fpr /= spec.n_neg
    tpr /= spec.n_pos
    keep = _corners(fpr, tpr)
    fpr, tpr = fpr[keep], tpr[keep]
    if max_points is not None and len(fpr) > max_points:
        index = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(np.int64))
        fpr, tpr = fpr[index], tpr[index]
    return fpr, tpr


def _corners(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Indices of the vertices where the polyline changes direction (plus both ends)."""
    dx = np.diff(fpr)
    dy = np.diff(tpr)
    moving = (dx != 0) | (dy != 0)
    # Drop repeated points first, then points where consecutive segments are collinear.
    index = np.concatenate(([0], np.flatnonzero(moving) + 1))
    x, y = fpr[index], tpr[index]
    if len(index) <= 2:
        return index
    cross = np.diff(x)[:-1] * np.diff(y)[1:] - np.diff(y)[:-1] * np.diff(x)[1:]
    keep = np.concatenate(([True], np.abs(cross) > 1e-15, [True]))
    return index[keep]

"""ROC curves and score histograms as PNG files (matplotlib's Agg canvas: no display, no global backend)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfclip.utils.io import atomic_write_bytes

# A curve drawn with more vertices than this is thinned; the difference is below a pixel.
MAX_PLOT_POINTS = 4000


def _figure(width: float = 6.0, height: float = 5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_roc(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC"
) -> Path:
    """Write ROC curves ``(legend label, fpr, tpr)`` into one PNG, with the chance diagonal."""
    figure = _figure(6.4, 5.6)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    for index, (label, fpr, tpr) in enumerate(curves):
        axes.plot(fpr, tpr, linewidth=1.8 if index == 0 else 1.1, label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.005)
    axes.set_xlabel("false positive rate (reals called fake)")
    axes.set_ylabel("true positive rate (fakes detected)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(loc="lower right", fontsize=7 if len(curves) > 8 else 9)
    figure.tight_layout()
    return _save(figure, path)


def plot_score_histogram(
    labels: np.ndarray, scores: np.ndarray, path: str | Path, threshold: float = 0.5, title: str = "Scores"
) -> Path:
    """Write the score distributions of reals and fakes (densities, 50 bins) with the threshold marked."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    low, high = (0.0, 1.0) if len(finite) == 0 else (min(0.0, finite.min()), max(1.0, finite.max()))
    edges = np.linspace(low, high, 51)
    figure = _figure(6.4, 4.4)
    axes = figure.add_subplot(1, 1, 1)
    for value, name, color in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        selected = np.clip(scores[labels == value], low, high)
        if len(selected) == 0:
            continue
        counts, _ = np.histogram(selected, bins=edges, density=True)
        axes.stairs(counts, edges, fill=True, alpha=0.35, color=color, label=f"{name} (n={len(selected):,})")
        axes.stairs(counts, edges, color=color, linewidth=1.0)
    axes.axvline(threshold, color="0.3", linestyle=":", linewidth=1.0, label=f"threshold {threshold:g}")
    axes.set_xlabel("P(fake)")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(fontsize=9)
    figure.tight_layout()
    return _save(figure, path)

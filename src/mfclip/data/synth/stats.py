"""A simple global-image-statistics baseline, used to check that the benchmark is not trivially separable.

:func:`global_features` reduces an image to 11 numbers a forensic analyst would look at first:
per-channel mean and standard deviation, high-pass (Laplacian) energy, JPEG blockiness, the slope of the
radial power spectrum and the share of high-frequency power. :func:`statistics_baseline` fits a logistic
regression on training images and reports the AUC of each test set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

FEATURE_NAMES = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "log_highpass_energy",
    "jpeg_blockiness",
    "spectral_slope",
    "log_high_frequency_share",
    "log_luma_gradient",
)


@lru_cache(maxsize=8)
def _radial_bins(size: int) -> tuple[np.ndarray, np.ndarray]:
    freq = np.fft.fftfreq(size)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    bins = np.minimum((radius * size).astype(int), size // 2)
    return bins, np.hanning(size)[:, None] * np.hanning(size)[None, :]


def global_features(image: np.ndarray) -> np.ndarray:
    """11 global statistics of one ``(H, W, 3)`` uint8 or float image (square)."""
    x = np.asarray(image, dtype=np.float64)
    if x.max() > 1.5:
        x = x / 255.0
    means = x.mean(axis=(0, 1))
    stds = x.std(axis=(0, 1))
    luma = x @ np.array([0.299, 0.587, 0.114])
    lap = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
    highpass = np.log(np.mean(lap**2) + 1e-10)
    dx = np.abs(np.diff(luma, axis=1))
    dy = np.abs(np.diff(luma, axis=0))
    boundary = (dx[:, 7::8].mean() + dy[7::8, :].mean()) / 2
    inside = (np.delete(dx, np.s_[7::8], axis=1).mean() + np.delete(dy, np.s_[7::8], axis=0).mean()) / 2
    blockiness = boundary / (inside + 1e-8)
    size = min(luma.shape)
    bins, window = _radial_bins(size)
    power = np.abs(np.fft.fft2((luma[:size, :size] - luma.mean()) * window)) ** 2
    radial = np.bincount(bins.ravel(), power.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    f = np.arange(len(radial)) / size
    keep = (f >= 0.05) & (f <= 0.5)
    slope = np.polyfit(np.log(f[keep]), np.log(radial[keep] + 1e-12), 1)[0]
    hf_share = np.log(radial[f > 0.25].sum() / (radial[1:].sum() + 1e-12) + 1e-12)
    gradient = np.log(dx.mean() + dy.mean() + 1e-8)
    return np.concatenate([means, stds, [highpass, blockiness, slope, hf_share, gradient]])


def features_of_files(paths: Sequence[str | Path]) -> np.ndarray:
    """Stack :func:`global_features` of image files (decoded with :func:`mfclip.data.decode.load_image`)."""
    from mfclip.data.decode import load_image_array

    return np.stack([global_features(load_image_array(p)) for p in paths])


def statistics_baseline(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, float]:
    """Fit standardised logistic regression on the training features; AUC of each test set by name."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    model.fit(train_features, train_labels)
    return {
        name: float(roc_auc_score(labels, model.predict_proba(features)[:, 1]))
        for name, (features, labels) in test_sets.items()
    }

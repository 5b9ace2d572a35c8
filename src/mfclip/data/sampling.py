"""Class-balanced sampling weights: real and fake drawn equally often, optionally each generator too.

Fake faces usually outnumber real ones many times over (DiFF: ~13:1), and some generators dominate
their subset. :func:`balanced_weights` gives each class half of the draws and, with ``groups`` (e.g. the
generator of every row), splits each class's half equally among its groups; the training data module
draws with these weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_weights(
    labels: Sequence[int] | np.ndarray, groups: Sequence[str] | np.ndarray | None = None
) -> np.ndarray:
    """Per-row sampling weights (summing to 1): equal total per class, and per group within a class."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        if groups.shape != labels.shape:
            raise ValueError(f"groups has {len(groups)} entries but labels has {len(labels)}")
    classes = np.unique(labels)
    weights = np.zeros(len(labels), dtype=np.float64)
    for cls in classes:
        members = np.flatnonzero(labels == cls)
        if groups is None:
            weights[members] = 1.0 / len(members)
            continue
        names, inverse, counts = np.unique(
            groups[members].astype(str), return_inverse=True, return_counts=True
        )
        weights[members] = 1.0 / (len(names) * counts[inverse])
    return weights / weights.sum()

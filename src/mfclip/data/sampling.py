"""Class-balanced sampling: real and fake drawn equally often, optionally each generator equally often.

Fake faces usually outnumber real ones many times over (DiFF: ~13:1), and some generators dominate
their subset. :func:`balanced_sampler` returns a ``WeightedRandomSampler`` whose weights give each
class half of the draws and, with ``groups`` (e.g. the generator of every row), split each class's half
equally among its groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


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


def balanced_sampler(
    labels: Sequence[int] | np.ndarray,
    generator: torch.Generator | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
    num_samples: int | None = None,
    replacement: bool = True,
) -> WeightedRandomSampler:
    """A sampler drawing real and fake equally often (and each of ``groups`` equally within a class).

    ``generator`` is the torch random generator of the draws (seed it for repeatable epochs);
    ``num_samples`` defaults to the number of rows (one "epoch"). Pass ``groups=dataset.generators`` to
    balance generators too.
    """
    weights = balanced_weights(labels, groups)
    count = len(weights) if num_samples is None else int(num_samples)
    if count < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), count, replacement=replacement, generator=generator
    )

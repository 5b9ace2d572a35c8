"""Data-parallel helpers: a gradient-keeping all-gather for the contrastive loss, and rank detection.

Lightning starts the processes (``torchrun``, SLURM's ``srun``, or its own launcher for ``devices > 1``)
and sets up the process group; these helpers only read what it set up.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist


class AllGather:
    """``gather(t)``: ``t`` of every process concatenated in rank order, the local slice keeping its gradient.

    Passed to ``DetectorModel.compute_loss`` so the contrastive loss (and content SPA) score each process's
    rows against the global batch. ``rank`` tells the loss where the local rows start.
    """

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            # Deprecated in favour of a private API; it is still the public autograd-aware all-gather.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather is deprecated.*")
            parts = all_gather(tensor.contiguous(), group=self.group or dist.group.WORLD)
        return torch.cat(parts, dim=0)


def gather_for_loss(world_size: int) -> AllGather | None:
    """An :class:`AllGather` when more than one process trains, else None (the loss stays local)."""
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        return AllGather()
    return None


_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0 as its launcher announced it, before any process group exists.

    ``torchrun`` sets ``RANK``, SLURM ``SLURM_PROCID``; processes that Lightning starts itself get
    ``LOCAL_RANK`` and ``NODE_RANK``. A plain ``python`` run is rank 0. Only rank 0 writes the run directory.
    """
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value) == 0
    local = os.environ.get("LOCAL_RANK", "").strip()
    node = os.environ.get("NODE_RANK", "0").strip() or "0"
    if local.isdigit():
        return int(local) == 0 and node == "0"
    return True

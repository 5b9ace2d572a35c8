"""Feature-space losses of the peer detectors, on L2-normalised features in float32.

Call them inside :func:`float32_losses` (autocast off), as the peers' ``compute_loss`` do, so that mixed
precision runs the towers and never the losses.

- :func:`supervised_contrastive`: SupCon (Khosla et al., NeurIPS 2020, arXiv 2004.11362) with one view per
  image, as RINE adds it to its classification loss;
- :func:`alignment_loss` and :func:`uniformity_loss`: the hypersphere alignment and uniformity of Wang and
  Isola (ICML 2020, arXiv 2005.10242), label-aware alignment as GenD uses them.
"""

from __future__ import annotations

import math

import torch


def float32_losses(reference: torch.Tensor) -> torch.autocast:
    """A context with autocast off on ``reference``'s device: the losses inside run in float32."""
    return torch.autocast(device_type=reference.device.type, enabled=False)


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over anchors i of −mean_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ≠ i} exp(z_i·z_a/τ) ).

    ``features`` (B, D) are unit vectors; P(i) are the other images with i's label. An anchor without a
    positive contributes 0 (and still counts in the mean). A batch of one image gives 0.
    """
    z = features.float()
    batch = z.shape[0]
    if batch < 2:
        return z.sum() * 0.0
    logits = z @ z.t() / temperature
    self_mask = torch.eye(batch, dtype=torch.bool, device=z.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positives = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    count = positives.sum(dim=1)
    mean_log_prob = (log_prob * positives).sum(dim=1) / count.clamp(min=1)
    return -mean_log_prob.mean()


def alignment_loss(features: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Mean of ‖x_i − x_j‖^alpha over pairs i < j with the same label (0 when there is none)."""
    x = features.float()
    same = (labels.view(-1, 1) == labels.view(1, -1)).triu(diagonal=1)
    first, second = same.nonzero(as_tuple=True)
    if first.numel() == 0:
        return x.sum() * 0.0
    return (x[first] - x[second]).norm(dim=1).pow(alpha).mean()


def uniformity_loss(features: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log of the mean of exp(−t‖x_i − x_j‖²) over all pairs i < j (0 for fewer than two images)."""
    x = features.float()
    if x.shape[0] < 2:
        return x.sum() * 0.0
    distances = torch.pdist(x, p=2).pow(2)
    return torch.logsumexp(-t * distances, dim=0) - math.log(distances.numel())

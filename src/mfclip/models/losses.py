"""MFCLIP's training losses: ℓce on the head, the SPA-gated symmetric InfoNCE ℓcmc, and ℓkl.

Gathered contrastive loss: with ``gather`` (features of all processes concatenated in rank order, the
local slice keeping its gradient), each process scores its **local rows** against the **global columns**
with targets ``offset + arange(B)``, in both directions. The mean of the processes' losses (what data
parallel training averages) equals the single-process loss on the concatenated batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mfclip.models.base import GatherFn
from mfclip.models.spa import SamplePairAttention


def clamped_logit_scale(log_scale: torch.Tensor, maximum: float) -> torch.Tensor:
    """exp(s) with s clamped to [0, log(maximum)], as CLIP clamps its logit scale (so 1 <= exp(s) <= max).

    Outside the range the gradient with respect to s is zero.
    """
    return log_scale.clamp(min=0.0, max=math.log(maximum)).exp()


def local_offset(local: torch.Tensor, gathered: torch.Tensor, gather: GatherFn) -> int:
    """Row of ``gathered`` where this process's batch starts.

    Uses ``gather.rank`` when the gather function has it, else finds the local block (which the gather
    keeps unchanged) among the equally sized blocks.
    """
    batch = local.shape[0]
    if gathered.shape[0] % batch:
        raise ValueError(
            f"gathered features have {gathered.shape[0]} rows, not a multiple of the local batch {batch}; "
            "every process must use the same batch size"
        )
    rank = getattr(gather, "rank", None)
    if rank is not None:
        return int(rank) * batch
    for block in range(gathered.shape[0] // batch):
        if torch.equal(gathered[block * batch : (block + 1) * batch], local):
            return block * batch
    raise ValueError(
        "cannot find the local batch among the gathered features; give gather a `rank` attribute"
    )


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    spa: SamplePairAttention | None,
    gather: GatherFn | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over S = exp(s)·v̂t̂ᵀ ⊙ g; features must already be L2-normalised."""
    batch = image_features.shape[0]
    if gather is None:
        logits = logit_scale * image_features @ text_features.T
        gates = spa(image_features, text_features, text_features) if spa is not None else None
        if gates is not None:
            logits = logits * gates
        targets = torch.arange(batch, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))

    all_images = gather(image_features)
    all_texts = gather(text_features)
    offset = local_offset(image_features, all_images, gather)
    targets = offset + torch.arange(batch, device=image_features.device)
    image_rows = logit_scale * image_features @ all_texts.T  # (B, N): local images vs all texts
    text_rows = logit_scale * text_features @ all_images.T  # (B, N): local texts vs all images
    if spa is not None:
        image_gates = spa(image_features, text_features, all_texts, row_start=offset, col_start=0)
        # g_ij for all images i against the local texts j, transposed to the text rows' layout.
        text_gates = spa(all_images, all_texts, text_features, row_start=0, col_start=offset)
        if image_gates is not None and text_gates is not None:
            image_rows = image_rows * image_gates
            text_rows = text_rows * text_gates.T
    return 0.5 * (F.cross_entropy(image_rows, targets) + F.cross_entropy(text_rows, targets))


def kl_alignment_loss(
    text_features: torch.Tensor, prediction: torch.Tensor, temperature: float, detach_text: bool
) -> torch.Tensor:
    """KL(softmax(t/τ) ‖ softmax(pred/τ)), batch mean; the text distribution is the target."""
    target = text_features.detach() if detach_text else text_features
    target_log = F.log_softmax(target / temperature, dim=-1)
    prediction_log = F.log_softmax(prediction / temperature, dim=-1)
    return F.kl_div(prediction_log, target_log, log_target=True, reduction="batchmean")

"""SRM noise residual: three fixed 5x5 high-pass filters, each summed over RGB, clipped to [-3, 3]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mfclip.ops._checks import check_images, chunk_size, is_exporting

_SRM_INTEGER_KERNELS = torch.tensor(
    [
        [
            [0, 0, 0, 0, 0],
            [0, -1, 2, -1, 0],
            [0, 2, -4, 2, 0],
            [0, -1, 2, -1, 0],
            [0, 0, 0, 0, 0],
        ],
        [
            [-1, 2, -2, 2, -1],
            [2, -6, 8, -6, 2],
            [-2, 8, -12, 8, -2],
            [2, -6, 8, -6, 2],
            [-1, 2, -2, 2, -1],
        ],
        [
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 1, -2, 1, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
    ],
    dtype=torch.float64,
)
_SRM_EXACT_KERNELS = _SRM_INTEGER_KERNELS / torch.tensor([4.0, 12.0, 2.0], dtype=torch.float64)[:, None, None]
SRM_KERNELS = _SRM_EXACT_KERNELS.float()
"""The three SRM kernels K1/4, K2/12, K3/2, float32 (3, 5, 5). Treat as read-only."""

SRM_CLIP = 3.0
INPUT_SCALES = {"unit": 1.0, "byte": 255.0}


def srm_conv_weight(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The (3, 3, 5, 5) ``conv2d`` weight of :func:`srm_residual`: each kernel replicated over RGB."""
    return _SRM_EXACT_KERNELS.to(dtype=dtype, device=device).unsqueeze(1).expand(3, 3, 5, 5).contiguous()


def _padded_channel_sum(images: Tensor) -> Tensor:
    """R + G + B of (n, 3, H, W) images, zero-padded by 2 on every side: (n, H + 4, W + 4)."""
    count, _, height, width = images.shape
    padded = images.new_empty((count, height + 4, width + 4))
    for border in (padded[:, :2], padded[:, -2:], padded[:, 2:-2, :2], padded[:, 2:-2, -2:]):
        border.zero_()
    inner = padded[:, 2:-2, 2:-2]
    torch.add(images[:, 0], images[:, 1], out=inner)
    inner.add_(images[:, 2])
    return padded


def _unclipped_srm(images: Tensor, scale: float, out: Tensor) -> None:
    """Write the unclipped SRM responses of (n, 3, H, W) ``images`` into ``out`` (n, 3, H, W).

    Every kernel is built from the second difference c = [1, -2, 1] and a = [1, -2, 2, -2, 1], which is
    c convolved with [1, 0, 1]:  K1 = -c⊗c / 4,  K2 = -(a⊗a + 2 c⊗c) / 12,  K3 = c (one row) / 2. So
    c⊗c on the zero-padded image, computed one pixel beyond the output on every side, gives K1 at the
    centre, a⊗a as the sum of its four diagonal neighbours, and K3 from the row pass alone: the same
    result as the 5x5 correlation with padding 2, in a few cheap passes instead of 75 multiply-adds.
    """
    padded = _padded_channel_sum(images)
    height, width = images.shape[-2:]
    # c along each row, at every column that has both neighbours: (n, H + 4, W + 2).
    rows_c = (padded[..., :, : width + 2] + padded[..., :, 2:]).sub_(padded[..., :, 1 : width + 3], alpha=2.0)
    # c along each column of that: c⊗c at (H + 2) x (W + 2) positions around the output.
    both_c = (rows_c[..., : height + 2, :] + rows_c[..., 2:, :]).sub_(
        rows_c[..., 1 : height + 3, :], alpha=2.0
    )
    cc = both_c[..., 1 : height + 1, 1 : width + 1]
    pair_sums = both_c[..., :, :width] + both_c[..., :, 2:]  # [1, 0, 1] along rows: (n, H + 2, W)
    aa = pair_sums[..., :height, :] + pair_sums[..., 2:, :]  # and along columns: a⊗a (n, H, W)
    torch.mul(cc, -scale / 4.0, out=out[:, 0])
    torch.mul(aa.add_(cc, alpha=2.0), -scale / 12.0, out=out[:, 1])
    torch.mul(rows_c[..., 2 : height + 2, 1 : width + 1], scale / 2.0, out=out[:, 2])


def srm_residual(images: Tensor, input_scale: str = "unit") -> Tensor:
    """SRM noise residual of RGB images.

    Each output channel is one of :data:`SRM_KERNELS` correlated with the image and summed over the
    three input channels (``conv2d`` with :func:`srm_conv_weight`, stride 1, padding 2, zero padding),
    then clipped to [-3, 3] (``Hardtanh(-3, 3)``).

    Args:
        images: (B, 3, H, W) float RGB, values in [0, 1], any device.
        input_scale: ``"unit"`` (default) filters the [0, 1] values as given, as the released MFCLIP
            code does (the clip then rarely bites); ``"byte"`` filters ``255 * images``, the classic
            SRM convention.

    Returns:
        (B, 3, H, W) residual in the input's dtype and device. Differentiable with respect to
        ``images`` (the filters are fixed). float16 / bfloat16 inputs are filtered in float32.
    """
    check_images(images)
    if input_scale not in INPUT_SCALES:
        raise ValueError(f"unknown input_scale {input_scale!r}; valid: {sorted(INPUT_SCALES)}")
    scale = INPUT_SCALES[input_scale]
    batch, _, height, width = images.shape
    compute_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    if is_exporting() or (torch.is_grad_enabled() and images.requires_grad):
        # Differentiable and graph-capture path: the same filter as one conv2d (autograd handles backward).
        weight = srm_conv_weight(compute_dtype, images.device)
        filtered = F.conv2d(images.to(compute_dtype) * scale, weight, padding=2)
        return F.hardtanh(filtered, -SRM_CLIP, SRM_CLIP).to(images.dtype)
    residual = torch.empty((batch, 3, height, width), dtype=compute_dtype, device=images.device)
    step = chunk_size(batch, 3 * height * width, images.device)
    for start in range(0, batch, step):
        chunk = residual[start : start + step]
        _unclipped_srm(images[start : start + step].to(compute_dtype), scale, chunk)
        chunk.clamp_(-SRM_CLIP, SRM_CLIP)
    return residual.to(images.dtype)

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
    padded = images.new_zeros((count, height + 4, width + 4))
    inner = padded[:, 2:-2, 2:-2]
    torch.add(images[:, 0], images[:, 1], out=inner)
    inner.add_(images[:, 2])
    return padded


def _unclipped_srm(images: Tensor, scale: float, out: Tensor) -> None:
    """Write the unclipped SRM responses of (n, 3, H, W) ``images`` into ``out`` (n, 3, H, W).

    Every kernel is a sum of separable second-difference filters, with c = [1, -2, 1] and
    a = [1, -2, 2, -2, 1]:  K1 = -c⊗c / 4,  K2 = -(a⊗a + 2 c⊗c) / 12,  K3 = c (one row) / 2.
    Applying them as row then column differences on the zero-padded image gives the same result as
    the 5x5 correlation with padding 2, in a few cheap passes instead of 75 multiply-adds per pixel.
    """
    padded = _padded_channel_sum(images)
    height, width = images.shape[-2:]
    col = [padded[..., :, offset : offset + width] for offset in range(5)]
    outer_c = col[1] + col[3]
    rows_c = torch.sub(outer_c, col[2], alpha=2.0)  # c along rows: (n, H + 4, W)
    rows_a = (col[0] + col[4]).sub_(outer_c.sub_(col[2]), alpha=2.0)  # a along rows
    row_c = [rows_c[..., offset : offset + height, :] for offset in range(1, 4)]
    cc = (row_c[0] + row_c[2]).sub_(row_c[1], alpha=2.0)
    row_a = [rows_a[..., offset : offset + height, :] for offset in range(5)]
    outer_a = row_a[1] + row_a[3]
    aa = (row_a[0] + row_a[4]).sub_(outer_a.sub_(row_a[2]), alpha=2.0)
    torch.mul(cc, -scale / 4.0, out=out[:, 0])
    torch.mul(aa.add_(cc, alpha=2.0), -scale / 12.0, out=out[:, 1])
    torch.mul(row_c[1], scale / 2.0, out=out[:, 2])


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

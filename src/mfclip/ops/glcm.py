"""8-bit luma and grey-level co-occurrence (GLCM) homogeneity, batched on any device.

For one offset (distance 1, angle 0), 256 levels, a symmetric and normalised GLCM puts weight
1 / (2N) on both (a, b) and (b, a) for each of the N horizontally adjacent pixel pairs (a, b). Its
homogeneity sum_ij P(i, j) / (1 + (i - j)^2) is therefore the mean over those pairs of
1 / (1 + (a - b)^2): no 256x256 matrix is needed.

The sum over pairs is exact, so it depends only on the multiset of differences |a - b|, never on the
order of the pairs: like scikit-image's score (a function of the GLCM alone), a mirrored patch or one
whose rows come in another order scores bitwise the same, and ties between patches stay ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mfclip.ops._checks import chunk_size, is_exporting, score_dtype

# ITU-R BT.601 luma weights.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# The same weights scaled to 8-bit levels, as used in the computation.
LEVEL_WEIGHTS = tuple(255.0 * weight for weight in LUMA_WEIGHTS)


def gray_levels(images: Tensor) -> Tensor:
    """Float32 8-bit luma levels (integer values 0..255) of (..., 3, H, W) images in [0, 1].

    The exact sequence of float32 operations is part of the contract (it fixes which pixels land on
    which level): ``round_half_even((76.245 R + 149.685 G) + 29.07 B)`` with the weights
    ``255 * LUMA_WEIGHTS`` rounded to float32 and each product and sum rounded to float32, then
    clamped to [0, 255].
    """
    x = images if images.dtype == torch.float32 else images.to(torch.float32)
    red, green, blue = x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :]
    if is_exporting():
        levels = (red * LEVEL_WEIGHTS[0] + green * LEVEL_WEIGHTS[1]) + blue * LEVEL_WEIGHTS[2]
        return levels.round().clamp(0.0, 255.0)
    levels = torch.mul(red, LEVEL_WEIGHTS[0])
    term = torch.mul(green, LEVEL_WEIGHTS[1])
    levels.add_(term)
    torch.mul(blue, LEVEL_WEIGHTS[2], out=term)
    levels.add_(term)
    return levels.round_().clamp_(0.0, 255.0)


# Every float32 term fl(1 / (1 + d^2)) of an 8-bit difference d is at least 1/65026 > 2^-16, so it is an
# integer multiple of 2^-39 (the weight of its last mantissa bit). Counted in units of 2^-39 each term is an
# exact integer of at most 2^39, so a row of up to 2^23 terms sums exactly (far below 2^63) in int64.
TERM_UNIT = 2.0**-39
MAX_ROW_PAIRS = 1 << 23
_HALF = 1 << 31


def pair_term_units(levels: Tensor) -> Tensor:
    """Exact row sums of 1 / (1 + (a - b)^2) over horizontally adjacent levels (a, b), in units of 2^-39.

    ``levels``: float32 (..., H, W) holding integers 0..255, W - 1 <= ``MAX_ROW_PAIRS``. Each term is
    1 / (1 + (a - b)^2) rounded once to float32, which keeps a mean within 3e-8 of scikit-image's float64
    value; the terms are added as integers, so a row sum does not depend on the order of its pairs.
    Returns int64 (..., H).
    """
    if levels.shape[-1] - 1 > MAX_ROW_PAIRS:
        raise ValueError(
            f"rows of {levels.shape[-1]} pixels are too long for an exact GLCM sum "
            f"(at most {MAX_ROW_PAIRS + 1})"
        )
    diff = levels[..., 1:] - levels[..., :-1]
    if is_exporting():
        units = (1.0 + diff * diff).reciprocal() / TERM_UNIT
    else:
        # (1 + d^2) * 2^-39 is exact, so its float32 reciprocal is fl(1 / (1 + d^2)) * 2^39 in one pass.
        unit = torch.full((), TERM_UNIT, dtype=diff.dtype, device=diff.device)
        units = torch.addcmul(unit, diff, diff, value=TERM_UNIT, out=diff).reciprocal_()
    return units.sum(dim=-1, dtype=torch.int64)


def total_pair_terms(row_units: Tensor) -> Tensor:
    """Sum of :func:`pair_term_units` rows over the last dimension, as a value (float64; float32 on MPS).

    The rows are added exactly (in two int64 halves, which cannot overflow), so the total, and the one
    rounding to floating point, depend only on the multiset of pair differences, not on their order.
    """
    high = torch.div(row_units, _HALF, rounding_mode="floor")
    low = row_units - high * _HALF
    dtype = score_dtype(row_units.device)
    total = high.sum(dim=-1).to(dtype) * _HALF + low.sum(dim=-1).to(dtype)
    return total * TERM_UNIT


def pair_term_sums(levels: Tensor) -> Tensor:
    """Sum over the last two dims of 1 / (1 + (a - b)^2) for horizontally adjacent levels (a, b).

    Exact and order-independent (:func:`pair_term_units`, :func:`total_pair_terms`); float64 (float32 on
    MPS).
    """
    return total_pair_terms(pair_term_units(levels))


def to_gray_uint8(images: Tensor) -> Tensor:
    """Convert float RGB images in [0, 1] to 8-bit grey levels.

    Args:
        images: floating tensor of shape (..., 3, H, W), RGB, values in [0, 1]. Usually (B, 3, H, W).

    Returns:
        uint8 tensor of shape (..., H, W) on the same device:
        ``round_half_even(255 * (0.299 R + 0.587 G + 0.114 B))`` computed in float32 (as
        ``(76.245 R + 149.685 G) + 29.07 B``) and clamped to [0, 255]. Rounding (rather than
        truncating as ``(x * 255).astype(uint8)`` would) keeps an 8-bit image's grey level stable
        under float error. torchvision's ``Grayscale`` uses 0.2989 for red instead of 0.299; the two
        can differ by one level on a small fraction of pixels.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"images must have shape (..., 3, H, W) (RGB); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"images must be a floating tensor with values in [0, 1]; got dtype {images.dtype} "
            f"(convert 8-bit images with images.float() / 255)"
        )
    with torch.no_grad():
        leading = images.shape[:-3]
        height, width = images.shape[-2:]
        flat = images.detach().reshape(-1, 3, height, width)
        out = torch.empty((flat.shape[0], height, width), dtype=torch.uint8, device=images.device)
        step = chunk_size(flat.shape[0], height * width, images.device)
        for start in range(0, flat.shape[0], step):
            out[start : start + step] = gray_levels(flat[start : start + step])
        return out.reshape(*leading, height, width)


def glcm_homogeneity(gray: Tensor) -> Tensor:
    """GLCM homogeneity of 8-bit grey images at distance 1, angle 0, 256 levels, symmetric, normalised.

    Equal (within 1e-7; typically 1e-9) to scikit-image's
    ``graycoprops(graycomatrix(x, [1], [0], 256, symmetric=True, normed=True), "homogeneity")[0, 0]``
    for each image ``x``, computed as the mean of 1 / (1 + (a - b)^2) over all horizontally adjacent
    pixel pairs (a, b).

    Args:
        gray: tensor of shape (..., H, W) holding integer grey levels in [0, 255]: uint8 or any integer
            dtype, or a floating tensor with integer values. Any device.

    Returns:
        float64 tensor of shape (...) on the same device (float32 on MPS, which has no float64): one
        homogeneity in (0, 1] per image.

    Raises:
        ValueError: not a tensor, fewer than 2 dims, fewer than 2 columns (no pixel pairs), or values
            outside the integers 0..255.
    """
    if not isinstance(gray, Tensor):
        raise ValueError(f"gray must be a torch.Tensor, got {type(gray).__name__}")
    if gray.ndim < 2:
        raise ValueError(f"gray must have shape (..., H, W); got shape {tuple(gray.shape)}")
    height, width = gray.shape[-2:]
    if width < 2 or height < 1:
        raise ValueError(
            f"gray of shape {tuple(gray.shape)} has no horizontally adjacent pixel pairs: "
            f"GLCM homogeneity needs H >= 1 and W >= 2"
        )
    if gray.dtype == torch.bool or gray.is_complex():
        raise ValueError(f"gray must hold integer grey levels 0..255; got dtype {gray.dtype}")
    leading = gray.shape[:-2]
    if gray.numel() == 0:
        return torch.empty(leading, dtype=score_dtype(gray.device), device=gray.device)
    with torch.no_grad():
        gray = gray.detach()
        if gray.dtype != torch.uint8:
            low, high = gray.min().item(), gray.max().item()
            if low < 0 or high > 255:
                raise ValueError(
                    f"gray must hold grey levels in 0..255; got values in [{low}, {high}] "
                    f"(shape {tuple(gray.shape)})"
                )
            if gray.is_floating_point() and not torch.equal(gray, gray.round()):
                raise ValueError(
                    f"gray must hold integer grey levels 0..255; got non-integer values "
                    f"(dtype {gray.dtype}, shape {tuple(gray.shape)}); use to_gray_uint8 for images"
                )
        flat = gray.reshape(-1, height, width)
        rows = torch.empty((flat.shape[0], height), dtype=torch.int64, device=gray.device)
        step = chunk_size(flat.shape[0], height * width, gray.device)
        for start in range(0, flat.shape[0], step):
            rows[start : start + step] = pair_term_units(flat[start : start + step].to(torch.float32))
        return (total_pair_terms(rows) / (height * (width - 1))).reshape(leading)

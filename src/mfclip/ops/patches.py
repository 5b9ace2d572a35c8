"""Grid patches and richest-patch selection by GLCM homogeneity."""

from __future__ import annotations

import torch
from torch import Tensor

from mfclip.ops._checks import check_grid, check_images, chunk_size, is_exporting
from mfclip.ops.glcm import gray_levels, pair_term_sums, pair_term_units, total_pair_terms

PATCH_MODES = ("richest", "random", "whole", "fixed:<k>")


def _grid_view(images: Tensor, grid: int) -> Tensor:
    """(B, C, H, W) → (B, C, grid, ph, grid, pw), a view whenever ``images`` allows one."""
    return images.unflatten(3, (grid, -1)).unflatten(2, (grid, -1))


def split_patches(images: Tensor, grid: int) -> Tensor:
    """Cut each image into a non-overlapping ``grid`` x ``grid`` grid of patches.

    Args:
        images: (B, C, H, W) floating tensor; H and W divisible by ``grid``.
        grid: patches per side.

    Returns:
        (B, grid * grid, C, H / grid, W / grid) tensor, patches in row-major order (index
        ``row * grid + col``).
    """
    check_images(images, channels=None)
    patch_h, patch_w = check_grid(images, grid)
    batch, channels = images.shape[:2]
    patches = _grid_view(images, grid).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, grid * grid, channels, patch_h, patch_w)


def patch_homogeneity(images: Tensor, grid: int = 2) -> Tensor:
    """GLCM homogeneity of each grid patch of each image (the richest-patch score).

    Args:
        images: (B, 3, H, W) float RGB in [0, 1]; H and W divisible by ``grid``.
        grid: patches per side.

    Returns:
        float64 (B, grid * grid), row-major patch order: for each patch, scikit-image's GLCM homogeneity
        (distance 1, angle 0, 256 levels, symmetric, normalised) of its 8-bit luma
        (:func:`mfclip.ops.to_gray_uint8`). Lower means more texture. No gradient. float32 on MPS.
        The pair terms are summed exactly, so two patches with the same GLCM (a mirrored patch, for
        instance) score bitwise the same, as in scikit-image.
    """
    check_images(images)
    patch_h, patch_w = check_grid(images, grid)
    if patch_w < 2:
        raise ValueError(
            f"images of shape {tuple(images.shape)} split into a {grid}x{grid} grid give patches "
            f"{patch_w} pixel wide: GLCM homogeneity needs at least 2 columns per patch"
        )
    batch, _, height, width = images.shape
    if is_exporting():
        levels = gray_levels(images.detach())
        tiles = levels.reshape(-1, grid, patch_h, grid, patch_w).transpose(2, 3)
        return pair_term_sums(tiles).reshape(-1, grid * grid) / (patch_h * (patch_w - 1))
    rows = torch.empty((batch, grid * grid, patch_h), dtype=torch.int64, device=images.device)
    with torch.no_grad():
        source = images.detach()
        step = chunk_size(batch, height * width, images.device)
        for start in range(0, batch, step):
            levels = gray_levels(source[start : start + step])
            count = levels.shape[0]
            tiles = levels.view(count, grid, patch_h, grid, patch_w).transpose(2, 3)
            rows[start : start + step] = pair_term_units(tiles).reshape(count, grid * grid, patch_h)
        return total_pair_terms(rows).div_(patch_h * (patch_w - 1))


def _patch_index_for_mode(
    images: Tensor, grid: int, mode: str | int, generator: torch.Generator | None
) -> Tensor:
    """The (B,) int64 patch index a cropping mode selects."""
    batch = images.shape[0]
    num_patches = grid * grid
    if isinstance(mode, bool):
        raise ValueError(f"mode must be one of {PATCH_MODES} or an int patch index; got {mode!r}")
    if isinstance(mode, int) or (isinstance(mode, str) and mode.startswith("fixed:")):
        text = mode if isinstance(mode, int) else mode.removeprefix("fixed:")
        try:
            index = int(text)
        except ValueError:
            raise ValueError(f"mode {mode!r}: expected 'fixed:<k>' with an integer k") from None
        if not 0 <= index < num_patches:
            raise ValueError(
                f"mode {mode!r}: patch index must be in [0, {num_patches - 1}] for a {grid}x{grid} grid"
            )
        return torch.full((batch,), index, dtype=torch.int64, device=images.device)
    if mode == "richest":
        return patch_homogeneity(images, grid).argmin(dim=1)
    if mode == "random":
        device = generator.device if generator is not None else images.device
        index = torch.randint(num_patches, (batch,), generator=generator, device=device)
        return index.to(images.device)
    raise ValueError(f"unknown patch mode {mode!r}; valid: {PATCH_MODES} or an int patch index")


def richest_patch(
    images: Tensor,
    grid: int = 2,
    mode: str | int = "richest",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick one grid patch per image: by default the most textured one (lowest GLCM homogeneity).

    Args:
        images: (B, 3, H, W) float RGB in [0, 1], any device; H and W divisible by ``grid``.
        grid: patches per side (2 → four patches of H/2 x W/2, as at 224 px → 112 px).
        mode: which patch to keep:
            ``"richest"`` — lowest homogeneity (:func:`patch_homogeneity`); ties (patches with
            bitwise-equal scores, e.g. mirror images or constant patches) go to the lowest index, as
            ``numpy.argmin`` over scikit-image's scores does.
            ``"random"`` — uniformly random, drawn with ``generator`` (reproducible when given).
            ``"whole"`` — no cropping: returns ``images`` itself (shape (B, 3, H, W)) and index -1;
            ``grid`` is not used.
            ``"fixed:<k>"`` or an int ``k`` — patch ``k`` of every image.
        generator: ``torch.Generator`` for ``"random"``; its device is used to draw the indices.

    Returns:
        ``(patches, indices)``: patches (B, 3, H / grid, W / grid) (or the input for ``"whole"``),
        indices (B,) int64 in row-major patch order (``row * grid + col``), -1 for ``"whole"``.

    Raises:
        ValueError: not (B, 3, H, W) floating images, a size the grid cannot split, or a bad mode.

    The choice is not differentiable: it is made without gradient, and the returned patch is an
    indexed copy of the input, so gradients reach the pixels of the chosen patch only.
    """
    check_images(images)
    if isinstance(mode, str) and mode == "whole":
        return images, torch.full((images.shape[0],), -1, dtype=torch.int64, device=images.device)
    patch_h, patch_w = check_grid(images, grid)
    index = _patch_index_for_mode(images, grid, mode, generator)
    return _gather_patches(images, index, grid, patch_h, patch_w), index


def _gather_patches(images: Tensor, index: Tensor, grid: int, patch_h: int, patch_w: int) -> Tensor:
    """Copy patch ``index[b]`` of each image into a (B, C, ph, pw) tensor.

    A contiguous (B, C, H, W) tensor is a stack of B*C*H*grid contiguous runs of ``patch_w`` pixels, so
    the patches are one ``index_select`` of whole runs (a memcpy per run) rather than an element-wise
    gather. Gradients flow back to the selected pixels.
    """
    batch, channels = images.shape[:2]
    runs = images.contiguous().view(-1, patch_w)
    rows = torch.div(index, grid, rounding_mode="floor")
    cols = index - rows * grid
    device = images.device
    # Run number of (b, c, y) in patch (row, col): ((b * C + c) * H + row * ph + y) * grid + col.
    image_rows = torch.arange(batch * channels, device=device).view(batch, channels, 1) * (grid * patch_h)
    patch_rows = (rows * patch_h).view(batch, 1, 1) + torch.arange(patch_h, device=device).view(1, 1, -1)
    run_index = (image_rows + patch_rows) * grid + cols.view(batch, 1, 1)
    return runs.index_select(0, run_index.flatten()).view(batch, channels, patch_h, patch_w)

"""Input validation and chunking shared by the operators."""

from __future__ import annotations

import torch
from torch import Tensor

# Elements per intermediate tensor when an operator walks a batch in chunks. On a CPU a few hundred
# thousand float32 values keep every intermediate in cache; a GPU gets the whole batch at once.
_CPU_CHUNK_ELEMENTS = 1 << 18
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 28


def check_images(images: Tensor, name: str = "images", channels: int | None = 3) -> None:
    """Raise ``ValueError`` unless ``images`` is a floating (B, C, H, W) tensor with ``channels`` channels."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, {channels or 'C'}, H, W); got {images.ndim} dimensions, "
            f"shape {tuple(images.shape)}"
        )
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (RGB) in dimension 1; got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor with values in [0, 1]; got dtype {images.dtype} "
            f"(convert 8-bit images with images.float() / 255)"
        )


def check_grid(images: Tensor, grid: int, name: str = "images") -> tuple[int, int]:
    """Validate ``grid`` against the spatial size of ``images``; return the patch height and width."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    height, width = images.shape[-2], images.shape[-1]
    if height % grid or width % grid:
        raise ValueError(
            f"{name} of size {height}x{width} (shape {tuple(images.shape)}) cannot be split into a "
            f"{grid}x{grid} grid: height and width must both be divisible by {grid}"
        )
    return height // grid, width // grid


def chunk_size(items: int, elements_per_item: int, device: torch.device) -> int:
    """How many of ``items`` to process at once so one intermediate holds about a fixed element budget."""
    budget = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _ACCELERATOR_CHUNK_ELEMENTS
    return max(1, min(items, budget // max(1, elements_per_item)))


def score_dtype(device: torch.device) -> torch.dtype:
    """Accumulation and result dtype of homogeneity scores: float64, or float32 where the device has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def is_exporting() -> bool:
    """True while the operators are being traced or compiled (ONNX, TorchScript, torch.compile).

    Graph capture needs a batch-size-independent program: no Python loops over batch chunks and no
    ``out=`` writes into preallocated buffers, so the operators then take one whole-batch, out-of-place
    path that computes the same values.
    """
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )

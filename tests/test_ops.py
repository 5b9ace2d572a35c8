"""mfclip.ops against scikit-image, SciPy and per-sample references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from skimage.feature import graycomatrix, graycoprops

import mfclip.ops._checks as checks
from mfclip.ops import (
    LUMA_WEIGHTS,
    SRM_KERNELS,
    glcm_homogeneity,
    patch_homogeneity,
    richest_patch,
    split_patches,
    srm_conv_weight,
    srm_residual,
    to_gray_uint8,
)

SPEC_KERNELS = [
    (4, [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]),
    (
        12,
        [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
    ),
    (2, [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
]


def skimage_homogeneity(gray: np.ndarray) -> float:
    glcm = graycomatrix(gray, [1], [0], levels=256, symmetric=True, normed=True)
    return float(graycoprops(glcm, "homogeneity")[0, 0])


def numpy_gray(image: np.ndarray) -> np.ndarray:
    """8-bit luma of one (3, H, W) float image, the documented float32 operation sequence."""
    rgb = image.astype(np.float32)
    red, green, blue = (np.float32(255.0 * weight) for weight in LUMA_WEIGHTS)
    levels = (red * rgb[0] + green * rgb[1]) + blue * rgb[2]
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


def reference_richest(images: torch.Tensor, grid: int) -> list[int]:
    """Per-image loop: NumPy luma, scikit-image homogeneity per patch, argmin."""
    chosen = []
    for image in images:
        gray = numpy_gray(image.numpy())
        ph, pw = gray.shape[0] // grid, gray.shape[1] // grid
        scores = [
            skimage_homogeneity(gray[r * ph : (r + 1) * ph, c * pw : (c + 1) * pw])
            for r in range(grid)
            for c in range(grid)
        ]
        chosen.append(int(np.argmin(scores)))
    return chosen


def reference_srm(image: np.ndarray, scale: float) -> np.ndarray:
    """SRM of one (3, H, W) image with SciPy 2-D correlation, zero padding, float64 exact kernels."""
    out = []
    for divisor, kernel in SPEC_KERNELS:
        weights = np.asarray(kernel, dtype=np.float64) / divisor
        response = sum(
            correlate(image[c].astype(np.float64) * scale, weights, mode="constant", cval=0.0)
            for c in range(3)
        )
        out.append(np.clip(response, -3, 3))
    return np.stack(out)


@pytest.fixture(scope="module")
def astronaut_images(astronaut_rgb: np.ndarray) -> torch.Tensor:
    """Eight 128 px crops of the astronaut photo (faces, suit, flag, background), float in [0, 1]."""
    photo = torch.from_numpy(astronaut_rgb).permute(2, 0, 1).float() / 255
    corners = [(0, 0), (0, 128), (40, 150), (100, 60), (200, 300), (300, 0), (384, 384), (250, 200)]
    return torch.stack([photo[:, y : y + 128, x : x + 128] for y, x in corners])


# --- GLCM homogeneity ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 2), (2, 2), (7, 3), (37, 41), (112, 112), (16, 200)])
def test_glcm_homogeneity_matches_skimage_on_random_images(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    wide = rng.integers(0, 256, size=(3, *shape), dtype=np.uint8)
    narrow = rng.integers(100, 104, size=(2, *shape), dtype=np.uint8)  # high homogeneity
    for batch in (wide, narrow):
        ours = glcm_homogeneity(torch.from_numpy(batch))
        assert ours.dtype == torch.float64 and ours.shape == (batch.shape[0],)
        expected = np.array([skimage_homogeneity(x) for x in batch])
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-7)


def test_glcm_homogeneity_matches_skimage_on_photo_patches(astronaut_rgb: np.ndarray) -> None:
    photo = torch.from_numpy(astronaut_rgb).permute(2, 0, 1).float() / 255
    gray = to_gray_uint8(photo[None])[0]
    patches = gray.view(8, 64, 8, 64).transpose(1, 2)  # 64 patches of 64x64
    ours = glcm_homogeneity(patches)
    assert ours.shape == (8, 8)
    expected = np.array([[skimage_homogeneity(p.numpy()) for p in row] for row in patches])
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-7)
    assert expected.min() < 0.3 < expected.max()  # the photo has both flat and textured regions


def test_glcm_homogeneity_accepts_integer_valued_dtypes_and_checks_values() -> None:
    gray = torch.randint(0, 256, (2, 9, 11), dtype=torch.uint8)
    expected = glcm_homogeneity(gray)
    for dtype in (torch.int16, torch.int64, torch.float32, torch.float64):
        torch.testing.assert_close(glcm_homogeneity(gray.to(dtype)), expected, rtol=0, atol=0)
    constant = torch.full((5, 5), 17, dtype=torch.uint8)
    assert glcm_homogeneity(constant).item() == 1.0
    with pytest.raises(ValueError, match="integer grey levels"):
        glcm_homogeneity(gray.float().clamp(max=200) + 0.5)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        glcm_homogeneity(gray.long() + 200)
    with pytest.raises(ValueError, match="no horizontally adjacent pixel pairs"):
        glcm_homogeneity(torch.zeros(4, 7, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        glcm_homogeneity(torch.zeros(5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="bool"):
        glcm_homogeneity(torch.zeros(3, 3, dtype=torch.bool))


# --- grey levels ---------------------------------------------------------------------------------


def test_to_gray_uint8_follows_the_documented_rounding() -> None:
    images = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    gray = to_gray_uint8(images)
    assert gray.dtype == torch.uint8 and gray.shape == (3, 20, 24)
    for ours, image in zip(gray, images, strict=True):
        np.testing.assert_array_equal(ours.numpy(), numpy_gray(image.numpy()))
    # Grey 8-bit pixels keep their level (truncating 255 * luma would drop some by one).
    levels = torch.arange(256, dtype=torch.float32) / 255
    grey_image = levels.view(1, 1, 16, 16).expand(1, 3, 16, 16)
    np.testing.assert_array_equal(to_gray_uint8(grey_image).flatten().numpy(), np.arange(256))
    # Out-of-range values clamp; float64 input gives the same levels as float32.
    assert to_gray_uint8(torch.full((1, 3, 2, 2), 1.5)).unique().tolist() == [255]
    assert to_gray_uint8(torch.full((1, 3, 2, 2), -0.5)).unique().tolist() == [0]
    torch.testing.assert_close(to_gray_uint8(images.double()), gray, rtol=0, atol=0)


def test_to_gray_uint8_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        to_gray_uint8(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="floating"):
        to_gray_uint8(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


# --- patches ---------------------------------------------------------------------------------------


def test_split_patches_is_row_major() -> None:
    images = torch.arange(2 * 3 * 6 * 9, dtype=torch.float32).view(2, 3, 6, 9)
    patches = split_patches(images, 3)
    assert patches.shape == (2, 9, 3, 2, 3)
    for index in range(9):
        row, col = divmod(index, 3)
        torch.testing.assert_close(
            patches[:, index], images[:, :, row * 2 : row * 2 + 2, col * 3 : col * 3 + 3]
        )
    with pytest.raises(ValueError, match="6x9"):
        split_patches(images, 2)


def test_richest_patch_matches_per_sample_skimage_on_random_images() -> None:
    generator = torch.Generator().manual_seed(1)
    # Rows of varying contrast so the four patches differ clearly in texture.
    contrast = (
        torch.rand(10, 1, 1, 48, 1, generator=generator).expand(10, 3, 1, 48, 48).reshape(10, 3, 48, 48)
    )
    images = 0.5 + (torch.rand(10, 3, 48, 48, generator=generator) - 0.5) * contrast
    patches, indices = richest_patch(images, grid=2)
    assert patches.shape == (10, 3, 24, 24) and indices.dtype == torch.int64
    assert indices.tolist() == reference_richest(images, 2)
    torch.testing.assert_close(patches, split_patches(images, 2)[torch.arange(10), indices], rtol=0, atol=0)
    _, indices4 = richest_patch(images, grid=4)
    assert indices4.tolist() == reference_richest(images, 4)


def test_richest_patch_matches_per_sample_skimage_on_a_photo(astronaut_images: torch.Tensor) -> None:
    for grid in (2, 4):
        scores = patch_homogeneity(astronaut_images, grid)
        assert scores.shape == (8, grid * grid) and scores.dtype == torch.float64
        patches, indices = richest_patch(astronaut_images, grid)
        assert indices.tolist() == reference_richest(astronaut_images, grid)
        assert len(set(indices.tolist())) > 1
        size = 128 // grid
        for image, patch, index in zip(astronaut_images, patches, indices.tolist(), strict=True):
            row, col = divmod(index, grid)
            expected = image[:, row * size : (row + 1) * size, col * size : (col + 1) * size]
            torch.testing.assert_close(patch, expected, rtol=0, atol=0)


def test_richest_patch_ties_go_to_the_lowest_index() -> None:
    generator = torch.Generator().manual_seed(2)
    flat = torch.stack([torch.full((3, 8, 8), value) for value in (0.1, 0.4, 0.7, 0.9)])
    constant_patches = torch.cat([torch.cat([flat[0], flat[1]], 2), torch.cat([flat[2], flat[3]], 2)], 1)
    textured = torch.rand(3, 8, 8, generator=generator)
    tiled = textured.repeat(1, 2, 2)  # four identical textured patches
    two_rich = torch.cat([torch.cat([flat[0], textured], 2), torch.cat([flat[1], textured], 2)], 1)
    images = torch.stack([constant_patches, tiled, two_rich])
    _, indices = richest_patch(images)
    assert indices.tolist() == [0, 0, 1]
    scores = patch_homogeneity(images)
    assert scores[0].tolist() == [1.0] * 4
    assert scores[1].unique().numel() == 1 and scores[2, 1] == scores[2, 3]


def mirrored_patch_images(source: torch.Tensor, seed: int) -> torch.Tensor:
    """2x2-grid images whose patches are a smoother patch and mirror images of one textured patch.

    ``source`` is (N, 3, 2s, 2s); each image keeps its top-left s x s crop ``t`` and a flattened copy
    ``f`` (much smoother), then places f, t, fliplr(t), flipud(t), rot180(t) in a random order, so that
    two or three of its patches have the same GLCM (the same scikit-image score, bitwise).
    """
    generator = torch.Generator().manual_seed(seed)
    size = source.shape[-1] // 2
    images = []
    for image in source:
        texture = image[:, :size, :size]
        flat = (texture * 0.1 + 0.45).mul(255).round().div(255)
        variants = [flat, texture, texture.flip(-1), texture.flip(-2), texture.flip(-1, -2)]
        order = torch.randperm(5, generator=generator)[:4].tolist()
        patches = [variants[k] for k in order]
        top = torch.cat([patches[0], patches[1]], dim=2)
        bottom = torch.cat([patches[2], patches[3]], dim=2)
        images.append(torch.cat([top, bottom], dim=1))
    return torch.stack(images)


def test_mirrored_patches_tie_and_resolve_as_skimage_does(astronaut_images: torch.Tensor) -> None:
    crops = torch.cat([astronaut_images, astronaut_images.flip(-1), astronaut_images.transpose(-1, -2)])
    random = torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    random = (random * 255).round() / 255
    for source, seed in ((crops, 0), (crops, 1), (random, 2)):
        images = mirrored_patch_images(source, seed)
        scores = patch_homogeneity(images)
        gray = to_gray_uint8(images)
        size = images.shape[-1] // 2
        for image_scores, image_gray in zip(scores, gray, strict=True):
            tiles = [
                image_gray[r * size : (r + 1) * size, c * size : (c + 1) * size]
                for r in (0, 1)
                for c in (0, 1)
            ]
            reference = [skimage_homogeneity(tile.numpy()) for tile in tiles]
            # Equal GLCMs give bitwise-equal scores here exactly when they do in scikit-image.
            for a in range(4):
                for b in range(4):
                    assert (image_scores[a] == image_scores[b]) == (reference[a] == reference[b])
        _, indices = richest_patch(images)
        assert indices.tolist() == reference_richest(images, 2)


def test_homogeneity_depends_only_on_the_multiset_of_pair_differences() -> None:
    rng = np.random.default_rng(12)
    gray = torch.from_numpy(rng.integers(0, 200, size=(37, 53), dtype=np.uint8))
    same = torch.stack(
        [
            gray,
            gray.flip(-1),  # every pair reversed
            gray.flip(-2),  # rows in reverse order
            gray[torch.from_numpy(rng.permutation(37))],  # rows in any order
            gray + 55,  # every level shifted: the same differences
        ]
    )
    scores = glcm_homogeneity(same)
    assert scores.unique().numel() == 1
    np.testing.assert_allclose(scores[0].item(), skimage_homogeneity(gray.numpy()), rtol=0, atol=1e-7)


def test_constant_and_identical_patches_tie_at_the_first_index() -> None:
    levels = (0.0, 0.2, 0.6, 1.0)
    constant = torch.stack([torch.full((3, 20, 20), v) for v in levels])

    def grid(p: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.cat([p[0], p[1]], 2), torch.cat([p[2], p[3]], 2)], 1)

    texture = (torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(13)) * 255).round() / 255
    images = torch.stack(
        [
            grid(constant),  # four constant patches: homogeneity 1.0 everywhere
            grid([constant[1], constant[2], texture, texture]),  # first textured patch is 2
            grid([constant[0], texture.flip(-1), texture, constant[3]]),  # 1 and 2 tie
        ]
    )
    _, indices = richest_patch(images)
    assert indices.tolist() == [0, 2, 1] == reference_richest(images, 2)
    assert patch_homogeneity(images)[0].tolist() == [1.0] * 4


def test_richest_patch_modes() -> None:
    images = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    first = richest_patch(images, 3, "random", torch.Generator().manual_seed(7))
    again = richest_patch(images, 3, "random", torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert first[1].min() >= 0 and first[1].max() < 9 and first[1].unique().numel() > 3
    torch.testing.assert_close(first[0], split_patches(images, 3)[torch.arange(16), first[1]])

    whole, minus_one = richest_patch(images, 3, "whole")
    assert whole is images and minus_one.tolist() == [-1] * 16

    for mode in ("fixed:5", 5):
        patches, indices = richest_patch(images, 3, mode)
        assert indices.tolist() == [5] * 16
        torch.testing.assert_close(patches, images[:, :, 4:8, 8:12], rtol=0, atol=0)

    for bad_mode, message in (
        ("fixed:9", r"\[0, 8\]"),
        ("fixed:x", "integer"),
        ("best", "unknown"),
        (True, "mode"),
    ):
        with pytest.raises(ValueError, match=message):
            richest_patch(images, 3, bad_mode)


def test_richest_patch_gradient_reaches_only_the_chosen_pixels() -> None:
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    patches, indices = richest_patch(images)
    patches.sum().backward()
    assert images.grad is not None
    expected = torch.zeros(4, 4, 3, 8, 8)
    expected[torch.arange(4), indices] = 1
    torch.testing.assert_close(split_patches(images.grad, 2), expected, rtol=0, atol=0)


def test_richest_patch_batched_equals_per_sample_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "_CPU_CHUNK_ELEMENTS", 3 * 32 * 32)  # three images per chunk
    images = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(5)) ** 3
    patches, indices = richest_patch(images)
    scores = patch_homogeneity(images)
    for i in range(7):
        single_patch, single_index = richest_patch(images[i : i + 1])
        assert single_index.item() == indices[i].item()
        torch.testing.assert_close(single_patch[0], patches[i], rtol=0, atol=0)
        torch.testing.assert_close(patch_homogeneity(images[i : i + 1])[0], scores[i], rtol=0, atol=0)
    residual = srm_residual(images)
    for i in range(7):
        torch.testing.assert_close(srm_residual(images[i : i + 1])[0], residual[i], rtol=0, atol=0)
    gray = to_gray_uint8(images)
    torch.testing.assert_close(gray[3], to_gray_uint8(images[3:4])[0], rtol=0, atol=0)
    torch.testing.assert_close(glcm_homogeneity(gray), glcm_homogeneity(gray.clone()[:, None])[:, 0])


def test_patch_functions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"got 3 dimensions, shape \(3, 8, 8\)"):
        richest_patch(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 4, 8, 8\)"):
        richest_patch(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"9x8.*divisible by 2"):
        richest_patch(torch.rand(2, 3, 9, 8))
    with pytest.raises(ValueError, match="floating"):
        richest_patch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="positive integer"):
        richest_patch(torch.rand(2, 3, 8, 8), grid=0)
    with pytest.raises(ValueError, match="at least 2 columns"):
        patch_homogeneity(torch.rand(2, 3, 8, 2), grid=2)


# --- SRM -------------------------------------------------------------------------------------------


def test_srm_kernels_are_the_spec_values() -> None:
    assert SRM_KERNELS.shape == (3, 5, 5) and SRM_KERNELS.dtype == torch.float32
    for kernel, (divisor, values) in zip(SRM_KERNELS, SPEC_KERNELS, strict=True):
        torch.testing.assert_close(kernel, torch.tensor(values, dtype=torch.float32) / divisor)
    weight = srm_conv_weight(torch.float64)
    assert weight.shape == (3, 3, 5, 5) and weight.dtype == torch.float64
    for out_channel in range(3):
        for in_channel in range(3):
            torch.testing.assert_close(weight[out_channel, in_channel], SRM_KERNELS[out_channel].double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("input_scale", ["unit", "byte"])
def test_srm_residual_matches_scipy_correlation(dtype: torch.dtype, input_scale: str) -> None:
    images = torch.rand(2, 3, 19, 23, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    scale = 255.0 if input_scale == "byte" else 1.0
    residual = srm_residual(images.to(dtype), input_scale)
    assert residual.dtype == dtype and residual.shape == images.shape
    expected = np.stack([reference_srm(image.numpy(), scale) for image in images])
    tolerance = (1e-5 if dtype == torch.float32 else 1e-12) * scale
    np.testing.assert_allclose(residual.double().numpy(), expected, rtol=0, atol=tolerance)


def test_srm_residual_clips_to_three() -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    byte = srm_residual(images, "byte")
    assert byte.abs().max() == 3.0 and (byte.abs() == 3.0).float().mean() > 0.5
    unit = srm_residual(images, "unit")
    assert (unit.abs() == 3.0).float().mean() < 0.01  # [0, 1] input rarely reaches the clip
    torch.testing.assert_close(byte, (unit * 255).clamp(-3, 3), rtol=0, atol=1e-4)
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float().expand(1, 3, 8, 8)
    strong = srm_residual(checker)  # a one-pixel checkerboard saturates the filters
    expected = reference_srm(checker[0].numpy(), 1.0)
    np.testing.assert_allclose(strong[0].numpy(), expected, rtol=0, atol=1e-5)
    assert strong.abs().max() == 3.0
    with pytest.raises(ValueError, match="input_scale"):
        srm_residual(images, "percent")


def test_srm_residual_gradient_path_and_low_precision() -> None:
    images = torch.rand(2, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    leaf = images.clone().requires_grad_(True)
    with_grad = srm_residual(leaf)
    torch.testing.assert_close(with_grad.detach(), srm_residual(images), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x: srm_residual(x, "byte"), (leaf[:1, :, :6, :6].detach().requires_grad_(),)
    )
    half = srm_residual(images.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), srm_residual(images), rtol=0.02, atol=0.02)
    with pytest.raises(ValueError, match="3 channels"):
        srm_residual(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="dimensions"):
        srm_residual(torch.rand(3, 8, 8))
    assert srm_residual(torch.rand(0, 3, 8, 8)).shape == (0, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ops_on_cuda_match_cpu() -> None:
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    device_images = images.to("cuda")
    patches, indices = richest_patch(device_images)
    assert indices.device.type == "cuda"
    assert indices.cpu().tolist() == richest_patch(images)[1].tolist()
    torch.testing.assert_close(
        patch_homogeneity(device_images).cpu(), patch_homogeneity(images), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(srm_residual(patches).cpu(), srm_residual(patches.cpu()), rtol=0, atol=1e-5)
    generator = torch.Generator(device="cuda").manual_seed(1)
    assert richest_patch(device_images, mode="random", generator=generator)[1].device.type == "cuda"

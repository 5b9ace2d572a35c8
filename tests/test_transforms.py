"""Resize to the model input, each augmentation step, determinism under a seeded generator, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mfclip.data.transforms import (
    AugmentConfig,
    ImageTransform,
    TransformConfig,
    add_gaussian_noise,
    color_jitter,
    downscale,
    gaussian_blur,
    hflip,
    jpeg_recompress,
    resize_to_input,
    to_tensor,
)
from mfclip.utils.config import ConfigError


def textured(width: int = 48, height: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def high_frequency_energy(image: Image.Image) -> float:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.abs(np.diff(grey, axis=1)).mean())


def test_shorter_side_center_crop_keeps_the_middle() -> None:
    # Left third red, middle blue, right third green; the square crop sees only blue.
    array = np.zeros((32, 96, 3), np.uint8)
    array[:, :32, 0] = 255
    array[:, 32:64, 2] = 255
    array[:, 64:, 1] = 255
    out = resize_to_input(Image.fromarray(array), 16, "shorter_side_center_crop", "nearest")
    assert out.size == (16, 16)
    assert (np.asarray(out) == [0, 0, 255]).all()
    direct = resize_to_input(Image.fromarray(array), 16, "direct", "nearest")
    assert direct.size == (16, 16)
    colours = {tuple(c) for c in np.asarray(direct).reshape(-1, 3)}
    assert colours == {(255, 0, 0), (0, 0, 255), (0, 255, 0)}  # all content kept


def test_resize_tall_and_exact_sizes() -> None:
    assert resize_to_input(textured(20, 50), 24).size == (24, 24)
    same = textured(24, 24)
    assert resize_to_input(same, 24) is same


def test_to_tensor_range_and_layout() -> None:
    image = Image.fromarray(np.array([[[0, 128, 255]]], np.uint8))
    tensor = to_tensor(image)
    assert tensor.shape == (3, 1, 1) and tensor.dtype == torch.float32
    assert torch.allclose(tensor.flatten(), torch.tensor([0.0, 128 / 255, 1.0]))


def test_single_steps() -> None:
    image = textured(32, 32)
    assert np.array_equal(np.asarray(hflip(image)), np.asarray(image)[:, ::-1])
    assert high_frequency_energy(gaussian_blur(image, 2.0)) < 0.3 * high_frequency_energy(image)
    assert gaussian_blur(image, 0) is image
    low = downscale(image, 0.25)
    assert low.size == image.size and high_frequency_energy(low) < high_frequency_energy(image)
    assert downscale(image, 1.0) is image
    rough = np.abs(np.asarray(jpeg_recompress(image, 10), float) - np.asarray(image, float)).mean()
    fine = np.abs(np.asarray(jpeg_recompress(image, 95), float) - np.asarray(image, float)).mean()
    assert rough > fine > 0
    assert np.array_equal(np.asarray(color_jitter(image, 1.0, 1.0, 1.0, 0.0)), np.asarray(image))
    brighter = color_jitter(image, 1.5, 1.0, 1.0, 0.0)
    assert np.asarray(brighter, float).mean() > np.asarray(image, float).mean()
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    shifted = np.asarray(color_jitter(red, 1.0, 1.0, 1.0, 1 / 3))[0, 0]
    assert shifted[1] > 200 and shifted[0] < 60  # a third of a turn: red → green
    noisy = add_gaussian_noise(image, 0.05, np.random.default_rng(0))
    diff = np.asarray(noisy, float) - np.asarray(image, float)
    assert 5 < diff.std() < 20


def test_training_transform_is_deterministic_per_generator() -> None:
    config = TransformConfig(
        augment=AugmentConfig(
            hflip_p=0.5, jpeg_p=0.5, blur_p=0.5, color_jitter_p=0.5, downscale_p=0.5, noise_p=0.5
        )
    )
    transform = ImageTransform(24, config, train=True)
    images = [textured(40, 30, seed=i) for i in range(6)]
    first = [transform(im, np.random.default_rng(7)) for im in images]
    again = [transform(im, np.random.default_rng(7)) for im in images]
    other = [transform(im, np.random.default_rng(8)) for im in images]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    for tensor in first:
        assert tensor.shape == (3, 24, 24) and tensor.min() >= 0 and tensor.max() <= 1
    with pytest.raises(ValueError, match="needs a random generator"):
        transform(images[0])


def test_eval_transform_never_augments() -> None:
    image = textured(40, 30)
    evaluation = ImageTransform(
        24, TransformConfig(augment=AugmentConfig(hflip_p=1.0, blur_p=1.0)), train=False
    )
    plain = to_tensor(resize_to_input(image, 24))
    assert torch.equal(evaluation(image, np.random.default_rng(0)), plain)
    disabled = ImageTransform(24, TransformConfig(augment=AugmentConfig.off()), train=True)
    assert torch.equal(disabled(image), plain)


def test_config_validation_messages() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hflip_p'"):
        AugmentConfig.from_dict({"hflip_prob": 0.5})
    with pytest.raises(ConfigError, match="jpeg_quality must be"):
        AugmentConfig.from_dict({"jpeg_quality": [90, 30]})
    with pytest.raises(ConfigError, match="blur_p"):
        AugmentConfig.from_dict({"blur_p": 1.5})
    with pytest.raises(ConfigError, match="resize"):
        TransformConfig.from_dict({"resize": "stretch"})
    config = TransformConfig.from_dict({"resize": "direct", "augment": {"jpeg_quality": [50, 60]}})
    assert config.augment.jpeg_quality == (50, 60)
    with pytest.raises(ValueError, match="image_size must be positive"):
        ImageTransform(0)

"""Robustness degradations: parsing, determinism, and what each does to an image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mfclip.engine.protocol import Perturbation, load_protocol
from mfclip.engine.robustness import (
    STANDARD_PERTURBATIONS,
    PerturbedTransform,
    apply_perturbation,
    parse_perturbation,
    resolve_perturbations,
    robustness_table,
)
from mfclip.utils.config import ConfigError


@pytest.fixture(scope="module")
def photo(astronaut_rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(astronaut_rgb[64:320, 128:384])  # 256×256 around the face


def test_short_specs_parse_into_perturbations() -> None:
    assert parse_perturbation("jpeg75") == Perturbation(name="jpeg75", kind="jpeg", quality=75)
    assert parse_perturbation("downscale0.25").factor == 0.25
    assert parse_perturbation("blur2").sigma == 2.0
    assert parse_perturbation("noise10").kind == "noise"
    with pytest.raises(ConfigError, match="not of the form"):
        parse_perturbation("sharpen2")
    with pytest.raises(ConfigError, match="integer"):
        parse_perturbation("jpeg7.5")
    with pytest.raises(ConfigError, match="quality"):
        parse_perturbation("jpeg150")
    with pytest.raises(ConfigError, match="factor"):
        parse_perturbation("downscale2")


def test_names_resolve_against_the_protocol_then_as_specs() -> None:
    protocol = load_protocol("robustness")
    assert [p.name for p in resolve_perturbations(None, protocol.robustness)] == list(STANDARD_PERTURBATIONS)
    assert resolve_perturbations(["none"], protocol.robustness) == []
    chosen = resolve_perturbations(["jpeg50,blur1", "noise7", "jpeg50"], protocol.robustness)
    assert [p.name for p in chosen] == ["jpeg50", "blur1", "noise7"]
    assert [p.name for p in resolve_perturbations(["standard"])] == list(STANDARD_PERTURBATIONS)


def test_each_degradation_changes_the_image_as_expected(photo: Image.Image) -> None:
    original = np.asarray(photo, dtype=np.float64)

    def degraded(spec: str) -> np.ndarray:
        out = apply_perturbation(photo, parse_perturbation(spec), seed=0)
        assert out.size == photo.size and out.mode == "RGB"
        return np.asarray(out, dtype=np.float64)

    def error(spec: str) -> float:
        return float(np.abs(degraded(spec) - original).mean())

    assert error("jpeg95") < error("jpeg75") < error("jpeg30")
    assert 0 < error("downscale0.5") < error("downscale0.25")
    assert 0 < error("blur1") < error("blur3")
    noise = degraded("noise10") - original
    assert abs(noise.std() - 10) < 1.0 and abs(noise.mean()) < 0.5  # σ on the 0–255 scale
    assert error("noise5") < error("noise20")
    # JPEG really is a JPEG round trip at that quality.
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=50)
    assert np.array_equal(degraded("jpeg50"), np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64))


def test_noise_is_seeded_by_content_not_by_call_order(photo: Image.Image) -> None:
    noise = parse_perturbation("noise20")
    first = np.asarray(apply_perturbation(photo, noise, seed=0))
    other = Image.fromarray(np.asarray(photo)[::-1].copy())
    apply_perturbation(other, noise, seed=0)  # an unrelated call in between changes nothing
    assert np.array_equal(first, np.asarray(apply_perturbation(photo, noise, seed=0)))
    assert not np.array_equal(first, np.asarray(apply_perturbation(photo, noise, seed=1)))


def test_perturbed_transform_degrades_before_resizing(photo: Image.Image) -> None:
    from mfclip.data.transforms import ImageTransform, TransformConfig

    base = ImageTransform(64, TransformConfig(resize="direct", interpolation="bilinear"))
    transform = PerturbedTransform(base, parse_perturbation("blur3"))
    assert transform.draft_size is None and not transform.augments
    assert transform.config.resize == "direct" and transform.config.interpolation == "bilinear"
    tensor = transform(photo)
    assert tuple(tensor.shape) == (3, 64, 64) and 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0

    clean = base(photo)
    assert float((tensor - clean).abs().mean()) > 0.005


def test_robustness_table_has_a_row_per_clean_test_set() -> None:
    perturbations = [parse_perturbation("jpeg50"), parse_perturbation("blur2")]
    results = {
        "seen": {"overall": {"auc": 0.9}},
        "seen+jpeg50": {"overall": {"auc": 0.8}},
        "seen+blur2": {"overall": {"auc": 0.7}},
        "unseen": {"overall": {"auc": 0.6}},
        "unseen+jpeg50": {"overall": {"auc": 0.55}},
    }
    table = robustness_table(results, perturbations)
    lines = [line for line in table.splitlines() if line.startswith("|") and "---" not in line]
    assert lines[0].split("|")[1:-1] == [" test set ", " clean ", " jpeg50 ", " blur2 "]
    assert lines[1] == "| seen | 0.9000 | 0.8000 | 0.7000 |"
    assert lines[2] == "| unseen | 0.6000 | 0.5500 | — |"
    assert "JPEG quality 50" in table and "Gaussian blur σ=2 px" in table

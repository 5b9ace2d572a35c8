"""Robustness evaluation: deterministic image degradations applied on the fly to a test set.

A :class:`~mfclip.engine.protocol.Perturbation` (JPEG quality, downscale factor, Gaussian blur σ in
pixels, Gaussian noise σ on the 0–255 scale) is applied to each decoded image at its stored resolution,
before the image is resized to the model's input, as a shared or re-encoded copy would reach a detector.
Gaussian noise is seeded from the image content and a seed, so an image always receives the same noise
whatever the batch order, the number of loader workers or an interrupted and resumed run.

Perturbations are named in protocols (``robustness:``) or on the command line with a short spec:
``jpeg75``, ``downscale0.5``, ``blur2``, ``noise10``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from mfclip.data.transforms import (
    ImageTransform,
    downscale,
    gaussian_blur,
    jpeg_recompress,
)
from mfclip.engine.protocol import Perturbation
from mfclip.utils.config import ConfigError

# The graded levels of the bundled robustness protocol (and of `--perturb standard`).
STANDARD_PERTURBATIONS: tuple[str, ...] = (
    "jpeg95",
    "jpeg75",
    "jpeg50",
    "jpeg30",
    "downscale0.5",
    "downscale0.25",
    "blur1",
    "blur2",
    "blur3",
    "noise5",
    "noise10",
    "noise20",
)
_SPEC = re.compile(r"^(jpeg|downscale|blur|noise)[-_:=]?([0-9]*\.?[0-9]+)$")
_PARAMETER = {"jpeg": "quality", "downscale": "factor", "blur": "sigma", "noise": "sigma"}
PERTURBED_SEPARATOR = "+"  # a perturbed test set is named "<test set>+<perturbation>"


def parse_perturbation(spec: str) -> Perturbation:
    """A perturbation from a short spec: ``jpeg75``, ``downscale0.5``, ``blur2``, ``noise10``."""
    match = _SPEC.match(spec.strip().lower())
    if match is None:
        raise ConfigError(
            f"perturbation {spec!r} is not of the form jpeg<quality>, downscale<factor>, blur<sigma> or "
            "noise<sigma> (e.g. jpeg75, downscale0.5, blur2, noise10)"
        )
    kind, number = match.group(1), match.group(2)
    value: float | int = float(number)
    if kind == "jpeg":
        if not float(value).is_integer():
            raise ConfigError(f"perturbation {spec!r}: JPEG quality must be an integer 1-100")
        value = int(value)
    try:
        return Perturbation.from_dict(
            {"name": spec.strip(), "kind": kind, _PARAMETER[kind]: value}, source=f"perturbation {spec!r}"
        )
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None


def resolve_perturbations(
    names: Iterable[str] | None, available: Sequence[Perturbation] = ()
) -> list[Perturbation]:
    """Perturbations by name: one of ``available`` (a protocol's list) or a short spec.

    ``None`` returns ``available`` itself; ``standard`` expands to :data:`STANDARD_PERTURBATIONS`;
    ``none`` to nothing. Duplicates are dropped, order kept.
    """
    if names is None:
        return list(available)
    by_name = {p.name: p for p in available}
    result: dict[str, Perturbation] = {}
    for name in names:
        for part in (n.strip() for n in str(name).split(",")):
            if not part or part == "none":
                continue
            if part == "standard":
                for spec in STANDARD_PERTURBATIONS:
                    result.setdefault(spec, by_name.get(spec) or parse_perturbation(spec))
            elif part == "protocol":
                for perturbation in available:
                    result.setdefault(perturbation.name, perturbation)
            else:
                perturbation = by_name.get(part) or parse_perturbation(part)
                result.setdefault(perturbation.name, perturbation)
    return list(result.values())


def perturbed_name(test_set: str, perturbation: Perturbation) -> str:
    return f"{test_set}{PERTURBED_SEPARATOR}{perturbation.name}"


def describe(perturbation: Perturbation) -> str:
    """A short human description, e.g. ``JPEG quality 75``."""
    if perturbation.kind == "jpeg":
        return f"JPEG quality {perturbation.quality}"
    if perturbation.kind == "downscale":
        return f"downscale ×{perturbation.factor:g} and back"
    if perturbation.kind == "blur":
        return f"Gaussian blur σ={perturbation.sigma:g} px"
    return f"Gaussian noise σ={perturbation.sigma:g} (0–255)"


def content_seed(image: Image.Image, seed: int) -> np.random.Generator:
    """A generator seeded by ``seed`` and a checksum of the image's pixels."""
    array = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    checksum = zlib.crc32(array.tobytes())
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, checksum, *array.shape]))


def apply_perturbation(image: Image.Image, perturbation: Perturbation, seed: int = 0) -> Image.Image:
    """The degraded copy of an RGB image (same size). Deterministic in (image, perturbation, seed)."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    kind = perturbation.kind
    if kind == "jpeg":
        assert perturbation.quality is not None
        return jpeg_recompress(image, perturbation.quality)
    if kind == "downscale":
        assert perturbation.factor is not None
        return downscale(image, perturbation.factor, interpolation="bilinear")
    if kind == "blur":
        assert perturbation.sigma is not None
        return gaussian_blur(image, perturbation.sigma)
    assert perturbation.sigma is not None
    rng = content_seed(image, seed)
    array = np.asarray(image, dtype=np.float32)
    noisy = array + rng.standard_normal(array.shape, dtype=np.float32) * np.float32(perturbation.sigma)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="RGB")


class PerturbedTransform(ImageTransform):
    """An evaluation transform that degrades the decoded image first, then resizes it as ``transform`` does
    (the model's own transform, :meth:`ImageTransform.for_model`)."""

    def __init__(self, transform: ImageTransform, perturbation: Perturbation, seed: int = 0) -> None:
        super().__init__(transform.image_size, transform.config, train=False)
        self.perturbation = perturbation
        self.seed = int(seed)

    @property
    def draft_size(self) -> tuple[int, int] | None:
        return None  # degrade the stored image, not a reduced draft of it

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Any:
        return super().__call__(apply_perturbation(image, self.perturbation, self.seed), rng)

    def __repr__(self) -> str:
        return f"PerturbedTransform(image_size={self.image_size}, perturbation={self.perturbation.name})"


def robustness_table(
    results: Mapping[str, Mapping[str, Any]],
    perturbations: Sequence[Perturbation],
    metric: str = "auc",
) -> str:
    """Markdown: one row per clean test set, one column per perturbation (and the clean value)."""
    from mfclip.metrics.report import METRIC_TITLES, format_value, markdown_table

    base_names = [n for n in results if PERTURBED_SEPARATOR not in n]
    header = ["test set", "clean", *(p.name for p in perturbations)]
    rows = []
    for name in base_names:
        cells = [format_value(results[name]["overall"].get(metric))]
        for perturbation in perturbations:
            values = results.get(perturbed_name(name, perturbation))
            cells.append("—" if values is None else format_value(values["overall"].get(metric)))
        rows.append([name, *cells])
    legend = ", ".join(f"`{p.name}`: {describe(p)}" for p in perturbations)
    title = METRIC_TITLES.get(metric, metric)
    return "\n".join(
        [
            f"# Robustness ({title})",
            "",
            f"{title} of each test set, clean and under each degradation: {legend}.",
            "",
            markdown_table(header, rows),
            "",
        ]
    )

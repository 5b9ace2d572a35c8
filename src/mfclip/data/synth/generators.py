"""The named synthetic generators: which forgery each makes and which traces it leaves.

Two decoder families imitate the traces of real generators:

- :class:`DiffusionDecoder` takes the scene at a lower resolution (a "latent"), adds weak correlated
  noise there and up-samples with a smooth interpolating kernel: attenuated high-frequency noise and a
  periodic interpolation correlation at the up-sampling period, as latent-diffusion decoders leave.
- :class:`GanDecoder` up-samples in stride-2 transposed-convolution stages whose per-phase gains are
  unequal and whose kernels are fixed, slightly irregular "weights", with per-pixel noise injection:
  checkerboard peaks in the spectrum, as GAN generators leave.

Forgery types use the decoders differently: *entire synthesis* decodes the whole picture; *face swap*
decodes another identity's inner face and blends it into a real photo with a feathered mask;
*attribute manipulation* re-synthesises one region (mouth, eyes, brows or hair) with a changed attribute.
The per-image trace strength is drawn from a range, so traces are subtle and vary.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mfclip.data.synth.face import HAIR_COLOURS, IRIS_COLOURS, FaceParams, render_face
from mfclip.data.synth.imageops import (
    area_downsample,
    cubic_taps,
    fractal_noise,
    gaussian_blur,
    interpolation_phase_kernels,
    linear_taps,
    phase_upsample,
)

FORGERY_TYPES = ("entire_synthesis", "face_swap", "attribute_manipulation")
FAMILIES = ("diffusion", "gan")
Render = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class DiffusionDecoder:
    """Low-resolution latent + attenuated noise + smooth ``factor``-fold interpolating up-sampler."""

    factor: int
    kernel: str  # "linear" or "cubic"
    latent_noise: tuple[float, float]
    detail_noise: tuple[float, float]
    strength: tuple[float, float]

    def decode(self, render: Render, size: int, rng: np.random.Generator) -> np.ndarray:
        low = area_downsample(render(size), self.factor)
        sigma = rng.uniform(*self.latent_noise)
        noise = np.stack([fractal_noise(rng, *low.shape[:2], beta=0.8) for _ in range(3)], axis=-1)
        low = low + np.float32(sigma) * noise
        taps = linear_taps(self.factor) if self.kernel == "linear" else cubic_taps(self.factor)
        decoded = phase_upsample(low, interpolation_phase_kernels(self.factor, taps))
        mixed = _mix(decoded, render, size, rng.uniform(*self.strength), rng)
        detail = rng.uniform(*self.detail_noise)
        if detail > 0:  # synthesised fine grain, softer than sensor noise
            grain = rng.standard_normal(mixed.shape, dtype=np.float32)
            mixed += np.float32(detail) * gaussian_blur(grain, 0.5)
        return mixed


@dataclass(frozen=True)
class GanDecoder:
    """``stages`` stride-2 transposed convolutions with unequal phase gains and noise injection."""

    stages: int
    phase_gain: tuple[tuple[float, float], tuple[float, float]]
    channel_gain: tuple[float, float, float]
    imbalance: tuple[float, float]
    kernel_jitter: float
    kernel_seed: int
    injected_noise: tuple[float, float]
    strength: tuple[float, float]

    def phase_kernels(self, stage: int) -> np.ndarray:
        """The fixed ``(2, 2, 3, 3)`` "learned" up-sampling weights of one stage."""
        base = interpolation_phase_kernels(2, linear_taps(2))
        rng = np.random.default_rng([self.kernel_seed, stage])
        jitter = rng.standard_normal(base.shape).astype(np.float32)
        jitter -= jitter.mean(axis=(2, 3), keepdims=True)  # zero-sum: shapes edges, not brightness
        return base + np.float32(self.kernel_jitter) * jitter

    def decode(self, render: Render, size: int, rng: np.random.Generator) -> np.ndarray:
        x = area_downsample(render(size), 2**self.stages)
        imbalance = rng.uniform(*self.imbalance)
        pattern = np.asarray(self.phase_gain, dtype=np.float32)
        channels = np.asarray(self.channel_gain, dtype=np.float32)
        for stage in range(self.stages):
            x = phase_upsample(x, self.phase_kernels(stage))
            reps = (x.shape[0] // 2, x.shape[1] // 2)
            gain = np.tile(pattern, reps)[..., None] * channels
            x = x * (1.0 + np.float32(imbalance) * gain)
            sigma = rng.uniform(*self.injected_noise)
            x += np.float32(sigma) * rng.standard_normal(x.shape[:2], dtype=np.float32)[..., None]
        return _mix(x, render, size, rng.uniform(*self.strength), rng)


Decoder = DiffusionDecoder | GanDecoder


def _mix(
    decoded: np.ndarray, render: Render, size: int, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Blend the decoder output with a trace-free render seen through a lens-like blur (so sharpness
    alone does not tell the two apart): ``strength`` is the decoder's share."""
    clean = gaussian_blur(render(size), float(rng.uniform(0.3, 0.9)))
    return clean + np.float32(strength) * (decoded - clean)


@dataclass(frozen=True)
class SynthGeneratorInfo:
    """Metadata of one synthetic generator (a row of :data:`SYNTH_GENERATORS`)."""

    name: str
    forgery_type: str
    family: str
    seen: bool
    description: str
    decoder: Decoder

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "forgery_type": self.forgery_type,
            "family": self.family,
            "seen": self.seen,
            "description": self.description,
        }


def _seed(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


_CHECKER = ((1.0, -1.0), (-1.0, 1.0))
_STRIPES = ((1.0, 1.0), (-1.0, -1.0))
_CORNER = ((1.5, -0.5), (-0.5, -0.5))

SYNTH_GENERATORS: tuple[SynthGeneratorInfo, ...] = (
    SynthGeneratorInfo(
        "SynthDiff-A",
        "entire_synthesis",
        "diffusion",
        True,
        "whole image decoded from a half-resolution latent with a bilinear up-sampler",
        DiffusionDecoder(2, "linear", (0.004, 0.012), (0.0, 0.0), (0.6, 1.0)),
    ),
    SynthGeneratorInfo(
        "SynthGAN-A",
        "entire_synthesis",
        "gan",
        True,
        "whole image from one stride-2 transposed-convolution stage with a checkerboard phase gain",
        GanDecoder(
            1, _CHECKER, (1.0, 0.8, 1.2), (0.01, 0.035), 0.03, _seed("SynthGAN-A"), (0.0, 0.006), (0.5, 1.0)
        ),
    ),
    SynthGeneratorInfo(
        "SynthSwap-Diff",
        "face_swap",
        "diffusion",
        True,
        "inner face of another identity decoded by a diffusion-style decoder, blended with a feathered mask",
        DiffusionDecoder(2, "cubic", (0.006, 0.015), (0.0, 0.004), (0.8, 1.0)),
    ),
    SynthGeneratorInfo(
        "SynthEdit-GAN",
        "attribute_manipulation",
        "gan",
        True,
        "one region (mouth, eyes, brows or hair) re-synthesised with a changed attribute, GAN decoder",
        GanDecoder(
            1,
            _STRIPES,
            (1.1, 1.0, 0.9),
            (0.02, 0.05),
            0.06,
            _seed("SynthEdit-GAN"),
            (0.004, 0.012),
            (0.8, 1.0),
        ),
    ),
    SynthGeneratorInfo(
        "SynthDiff-B",
        "entire_synthesis",
        "diffusion",
        False,
        "whole image decoded from a quarter-resolution latent with a bicubic up-sampler and grain",
        DiffusionDecoder(4, "cubic", (0.002, 0.008), (0.004, 0.012), (0.25, 0.7)),
    ),
    SynthGeneratorInfo(
        "SynthGAN-B",
        "entire_synthesis",
        "gan",
        False,
        "whole image from two stride-2 transposed-convolution stages (period-4 spectral peaks)",
        GanDecoder(
            2, _CORNER, (0.9, 1.1, 1.0), (0.004, 0.015), 0.04, _seed("SynthGAN-B"), (0.004, 0.012), (0.4, 1.0)
        ),
    ),
    SynthGeneratorInfo(
        "SynthSwap-GAN",
        "face_swap",
        "gan",
        False,
        "inner face of another identity decoded by a GAN-style decoder, blended with a feathered mask",
        GanDecoder(
            1, _CORNER, (1.0, 1.0, 1.0), (0.015, 0.04), 0.05, _seed("SynthSwap-GAN"), (0.0, 0.008), (0.8, 1.0)
        ),
    ),
    SynthGeneratorInfo(
        "SynthEdit-Diff",
        "attribute_manipulation",
        "diffusion",
        False,
        "one region (mouth, eyes, brows or hair) re-synthesised with a changed attribute, diffusion decoder",
        DiffusionDecoder(2, "linear", (0.006, 0.015), (0.0, 0.004), (0.8, 1.0)),
    ),
)
GENERATORS_BY_NAME: dict[str, SynthGeneratorInfo] = {g.name: g for g in SYNTH_GENERATORS}
SEEN_GENERATORS: tuple[str, ...] = tuple(g.name for g in SYNTH_GENERATORS if g.seen)
UNSEEN_GENERATORS: tuple[str, ...] = tuple(g.name for g in SYNTH_GENERATORS if not g.seen)

EDIT_REGIONS = ("mouth", "eyes", "brows", "hair")


def edit_attribute(params: FaceParams, region: str, rng: np.random.Generator) -> FaceParams:
    """The same face with one attribute of ``region`` changed (what an attribute editor is asked to do)."""
    idt = params.identity
    if region == "mouth":
        edited = params.replace_pose(
            mouth_open=float(rng.uniform(0.0, 1.0)), smile=float(rng.uniform(-0.3, 1.0))
        )
        lip = np.asarray(idt.lip) * rng.uniform(0.8, 1.15, size=3)
        return edited.replace_identity(lip=tuple(float(c) for c in np.clip(lip, 0, 1)))
    if region == "eyes":
        iris = IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))]
        return params.replace_identity(iris=iris).replace_pose(eye_open=float(rng.uniform(0.6, 1.0)))
    if region == "brows":
        return params.replace_identity(
            brow_thick=idt.brow_thick * float(rng.uniform(0.6, 1.6)),
            brow_tilt=float(rng.uniform(-0.25, 0.25)),
        )
    if region == "hair":
        hair = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]
        return params.replace_identity(
            hair=tuple(float(c) for c in np.asarray(hair) * rng.uniform(0.85, 1.15))
        )
    raise ValueError(f"unknown edit region {region!r}; valid: {list(EDIT_REGIONS)}")


def swap_identity(target: FaceParams, source: FaceParams) -> FaceParams:
    """``target``'s pose and head with ``source``'s inner-face features (skin pulled towards the target's)."""
    t, s = target.identity, source.identity
    skin = tuple(float(a + (b - a) * 0.35) for a, b in zip(t.skin, s.skin, strict=True))
    inner = {
        "skin": skin,
        "eye_dx": s.eye_dx,
        "eye_w": s.eye_w,
        "eye_h": s.eye_h,
        "iris": s.iris,
        "brow_thick": s.brow_thick,
        "brow_gap": s.brow_gap,
        "brow_tilt": s.brow_tilt,
        "nose_len": s.nose_len,
        "nose_w": s.nose_w,
        "mouth_w": s.mouth_w,
        "lip": s.lip,
        "beard": 0.0,
    }
    return target.replace_identity(**inner)


def blend_region(
    photo: np.ndarray, region_image: np.ndarray, mask: np.ndarray, colour_match: float
) -> np.ndarray:
    """Paste ``region_image`` into ``photo`` under a soft mask, first moving its mean colour towards the
    photo's by ``colour_match`` (0: none, 1: full), as face-swap pipelines do."""
    weights = mask[..., None]
    total = np.float32(mask.sum() + 1e-6)
    shift = ((photo - region_image) * weights).sum(axis=(0, 1)) / total
    adjusted = region_image + np.float32(colour_match) * shift
    return photo + weights * (adjusted - photo)


def render_fn(params: FaceParams) -> Render:
    """A cached ``size → render`` function of one scene."""
    cache: dict[int, np.ndarray] = {}

    def render(size: int) -> np.ndarray:
        if size not in cache:
            cache[size] = render_face(params, size)
        return cache[size]

    return render

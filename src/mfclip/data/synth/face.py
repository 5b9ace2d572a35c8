"""Procedural face-like scenes: identity and pose parameters, a vectorised renderer and region masks.

The scenes are cartoon-like portraits (a shaded head with eyes, brows, nose, mouth, ears, hair, optional
beard and glasses, on a textured background). They are not photographs of anyone: every face is drawn
from random parameters. Coordinates are normalised to ``[-1, 1]`` across the image, so one parameter set
renders the same scene at any resolution (generators render at a lower resolution and up-sample).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from mfclip.data.synth.imageops import fractal_noise, gaussian_blur, strand_noise

RGB = tuple[float, float, float]

_SKIN_LIGHT = np.array([0.96, 0.80, 0.69])
_SKIN_DARK = np.array([0.36, 0.23, 0.16])
HAIR_COLOURS: tuple[RGB, ...] = (
    (0.06, 0.05, 0.05),  # black
    (0.22, 0.14, 0.08),  # dark brown
    (0.42, 0.27, 0.15),  # brown
    (0.78, 0.62, 0.38),  # blond
    (0.55, 0.22, 0.10),  # red
    (0.62, 0.62, 0.62),  # grey
)
IRIS_COLOURS: tuple[RGB, ...] = (
    (0.25, 0.14, 0.07),
    (0.40, 0.25, 0.12),
    (0.25, 0.40, 0.60),
    (0.30, 0.45, 0.30),
    (0.45, 0.45, 0.45),
)
HAIR_STYLES = ("short", "long", "shaved", "volume")
REGIONS = ("inner_face", "mouth", "eyes", "brows", "hair")


@dataclass(frozen=True)
class Identity:
    """Facial traits that stay the same across every picture of one synthetic person."""

    skin: RGB
    head_w: float
    head_h: float
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    iris: RGB
    brow_thick: float
    brow_gap: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_w: float
    mouth_y: float
    lip: RGB
    hair: RGB
    hair_style: str
    hair_volume: float
    hairline: float
    beard: float
    glasses: bool
    ear: float


@dataclass(frozen=True)
class Pose:
    """Everything that changes from one picture of a person to the next: framing, expression, light."""

    cx: float
    cy: float
    scale: float
    roll: float
    yaw: float
    mouth_open: float
    smile: float
    eye_open: float
    light_x: float
    light_y: float
    ambient: float
    background: tuple[RGB, RGB]
    background_angle: float
    background_texture: float
    background_beta: float
    cloth: RGB
    exposure: float


@dataclass(frozen=True)
class FaceParams:
    identity: Identity
    pose: Pose
    texture_seed: int

    def replace_identity(self, **changes: object) -> FaceParams:
        return dataclasses.replace(self, identity=dataclasses.replace(self.identity, **changes))

    def replace_pose(self, **changes: object) -> FaceParams:
        return dataclasses.replace(self, pose=dataclasses.replace(self.pose, **changes))


def _rgb(values: np.ndarray | tuple[float, ...]) -> RGB:
    r, g, b = (float(np.clip(v, 0.0, 1.0)) for v in values)
    return (r, g, b)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random synthetic identity."""
    tone = rng.uniform(0.0, 1.0) ** 1.3
    skin = _SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone
    skin = skin * rng.uniform(0.95, 1.05, size=3) * np.array([1.0, 1.0, rng.uniform(0.95, 1.05)])
    hair = np.array(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]) * rng.uniform(0.85, 1.15)
    iris = np.array(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]) * rng.uniform(0.85, 1.15)
    lip = skin * np.array([1.0, 0.72, 0.72]) * rng.uniform(0.8, 0.95)
    head_w = rng.uniform(0.30, 0.40)
    return Identity(
        skin=_rgb(skin),
        head_w=head_w,
        head_h=head_w * rng.uniform(1.22, 1.45),
        eye_dx=head_w * rng.uniform(0.36, 0.46),
        eye_y=rng.uniform(-0.08, -0.02),
        eye_w=head_w * rng.uniform(0.17, 0.23),
        eye_h=head_w * rng.uniform(0.075, 0.11),
        iris=_rgb(iris),
        brow_thick=head_w * rng.uniform(0.035, 0.075),
        brow_gap=head_w * rng.uniform(0.17, 0.27),
        brow_tilt=rng.uniform(-0.2, 0.2),
        nose_len=head_w * rng.uniform(0.45, 0.65),
        nose_w=head_w * rng.uniform(0.14, 0.22),
        mouth_w=head_w * rng.uniform(0.30, 0.45),
        mouth_y=head_w * rng.uniform(0.70, 0.85),
        lip=_rgb(lip),
        hair=_rgb(hair),
        hair_style=HAIR_STYLES[int(rng.choice(4, p=[0.4, 0.3, 0.1, 0.2]))],
        hair_volume=rng.uniform(0.02, 0.09),
        hairline=rng.uniform(0.55, 0.80),
        beard=float(rng.uniform(0.3, 0.8)) if rng.uniform() < 0.15 else 0.0,
        glasses=bool(rng.uniform() < 0.15),
        ear=rng.uniform(0.8, 1.2),
    )


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw random framing, expression, lighting and background for one picture."""
    grey = rng.uniform(0.15, 0.85)
    bg_base = grey + (rng.uniform(0.1, 0.9, size=3) - grey) * rng.uniform(0.1, 0.7)
    bg_other = np.clip(bg_base + rng.normal(0.0, 0.15, size=3), 0.0, 1.0)
    angle = rng.uniform(-math.pi, math.pi)
    return Pose(
        cx=rng.uniform(-0.06, 0.06),
        cy=rng.uniform(-0.10, 0.02),
        scale=rng.uniform(0.95, 1.15),
        roll=rng.uniform(-0.16, 0.16),
        yaw=rng.uniform(-0.05, 0.05),
        mouth_open=float(rng.uniform(0.0, 1.0) ** 2),
        smile=rng.uniform(-0.3, 1.0),
        eye_open=rng.uniform(0.65, 1.0),
        light_x=math.cos(angle) * rng.uniform(0.2, 0.8),
        light_y=-abs(math.sin(angle)) * rng.uniform(0.2, 0.8),
        ambient=rng.uniform(0.45, 0.7),
        background=(_rgb(bg_base), _rgb(bg_other)),
        background_angle=rng.uniform(-math.pi, math.pi),
        background_texture=rng.uniform(0.01, 0.08),
        background_beta=rng.uniform(1.8, 3.2),
        cloth=_rgb(rng.uniform(0.05, 0.9, size=3)),
        exposure=rng.uniform(0.85, 1.1),
    )


class _Canvas:
    """Image-space grid plus the face's local frame (centre, scale, roll)."""

    def __init__(self, size: int, pose: Pose) -> None:
        self.size = size
        self.px = 2.0 / size
        coords = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
        self.x = coords[None, :]
        self.y = coords[:, None]
        self.cx, self.cy, self.scale = pose.cx, pose.cy, pose.scale
        self.cos, self.sin = math.cos(pose.roll), math.sin(pose.roll)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        return (
            self.cx + self.scale * (self.cos * u - self.sin * v),
            self.cy + self.scale * (self.sin * u + self.cos * v),
        )

    def window(self, u: float, v: float, radius: float) -> tuple[slice, slice]:
        """Pixel rows/cols covering a local-frame disc of ``radius`` (plus an edge margin)."""
        x, y = self.to_image(u, v)
        r = self.scale * radius + 3 * self.px
        col0 = max(0, int((x - r + 1.0) / self.px))
        col1 = min(self.size, math.ceil((x + r + 1.0) / self.px))
        row0 = max(0, int((y - r + 1.0) / self.px))
        row1 = min(self.size, math.ceil((y + r + 1.0) / self.px))
        return slice(row0, max(row0, row1)), slice(col0, max(col0, col1))

    def local(self, rows: slice = slice(None), cols: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Face-frame coordinates ``(u, v)`` of the pixels in ``rows x cols``."""
        dx = self.x[:, cols] - np.float32(self.cx)
        dy = self.y[rows, :] - np.float32(self.cy)
        inv = np.float32(1.0 / self.scale)
        u = (np.float32(self.cos) * dx + np.float32(self.sin) * dy) * inv
        v = (np.float32(-self.sin) * dx + np.float32(self.cos) * dy) * inv
        return u, v

    def edge(self, signed_distance: np.ndarray, softness: float = 1.0) -> np.ndarray:
        """Anti-aliased coverage from a signed distance in local units (negative inside)."""
        width = np.float32(self.px * softness / self.scale)
        return np.clip(np.float32(0.5) - signed_distance / width, 0.0, 1.0)


def _ellipse_sd(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float, angle: float = 0.0
) -> np.ndarray:
    """Approximate signed distance to an ellipse (exact on the axes)."""
    du, dv = u - np.float32(cu), v - np.float32(cv)
    if angle:
        c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        du, dv = c * du + s * dv, -s * du + c * dv
    q = np.sqrt((du / np.float32(a)) ** 2 + (dv / np.float32(b)) ** 2)
    return (q - 1.0) * np.float32(min(a, b))


def _blend(target: np.ndarray, alpha: np.ndarray, colour: np.ndarray | RGB) -> None:
    """In place: ``target = target * (1 - alpha) + colour * alpha``."""
    colour = np.asarray(colour, dtype=np.float32)
    target += alpha[..., None] * (colour - target)


def render_face(params: FaceParams, size: int) -> np.ndarray:
    """Render the scene at ``size x size``: float32 RGB in ``[0, 1]`` (display-referred)."""
    idt, pose = params.identity, params.pose
    canvas = _Canvas(size, pose)
    rng = np.random.default_rng(np.random.SeedSequence([params.texture_seed, size]))
    hw, hh = idt.head_w, idt.head_h
    skin = np.asarray(idt.skin, dtype=np.float32)
    hair_colour = np.asarray(idt.hair, dtype=np.float32)

    # Background: a two-colour gradient with natural-image texture.
    c0, c1 = (np.asarray(c, dtype=np.float32) for c in pose.background)
    ramp = (canvas.x * math.cos(pose.background_angle) + canvas.y * math.sin(pose.background_angle)) * 0.5
    ramp = np.clip(ramp + 0.5, 0.0, 1.0)
    texture = 1.0 + np.float32(pose.background_texture) * fractal_noise(rng, size, size, pose.background_beta)
    image = (c0 + ramp[..., None] * (c1 - c0)) * texture[..., None]
    strands = strand_noise(rng, size, size, along=3.0)
    hair_tex = (1.0 + np.float32(0.15) * strands)[..., None]
    skin_tex = 1.0 + fractal_noise(rng, size, size, (1.2, 3.0), (0.015, 0.03))

    # Long hair falls behind the head and shoulders.
    if idt.hair_style == "long":
        rows, cols = canvas.window(0.0, 0.15, hh * 1.35)
        uu, vv = canvas.local(rows, cols)
        back = canvas.edge(_ellipse_sd(uu, vv, 0.0, 0.15, hw * 1.3, hh * 1.35))
        _blend(image[rows, cols], back, hair_colour * 0.85)
    # Shoulders (shaded cloth), then the neck.
    rows, cols = canvas.window(0.0, hh + 0.62, 0.95)
    uu, vv = canvas.local(rows, cols)
    shoulder = canvas.edge(_ellipse_sd(uu, vv, 0.0, hh + 0.62, 0.95, 0.5), 1.5)
    cloth = (
        np.asarray(pose.cloth, dtype=np.float32)
        * np.clip(1.1 - 0.6 * (vv - np.float32(hh)), 0.6, 1.1)[..., None]
    )
    _blend(image[rows, cols], shoulder, cloth)
    rows, cols = canvas.window(0.0, hh * 0.95, hh * 0.6)
    uu, vv = canvas.local(rows, cols)
    neck = canvas.edge(_ellipse_sd(uu, vv, 0.0, hh * 0.95, hw * 0.55, hh * 0.55), 1.2)
    _blend(image[rows, cols], neck, skin * 0.78)

    # Ears, then the head.
    for side in (-1.0, 1.0):
        rows, cols = canvas.window(side * hw * 0.97, -0.02, 0.12)
        uu, vv = canvas.local(rows, cols)
        ear = canvas.edge(_ellipse_sd(uu, vv, side * hw * 0.97, -0.02, 0.05 * idt.ear, 0.09 * idt.ear))
        _blend(image[rows, cols], ear, skin * 0.88)
    grow = idt.hair_volume * (2.0 if idt.hair_style == "volume" else 1.0)
    head_rows, head_cols = canvas.window(0.0, 0.0, max(hw * 1.15, hh * 1.1, hh + grow * 1.2 + 0.02))
    u, v = canvas.local(head_rows, head_cols)
    face = image[head_rows, head_cols]
    head_sd = _ellipse_sd(u, v, 0.0, 0.0, hw, hh)
    # Narrow the jaw: pull the lower half of the outline in.
    jaw = np.clip(v / np.float32(hh), 0.0, 1.0)
    head_sd = head_sd + np.float32(0.35 * hw) * jaw * jaw * np.abs(u) / np.float32(hw)
    albedo = skin * skin_tex[head_rows, head_cols, None]
    # Warmer cheeks.
    for side in (-1.0, 1.0):
        du, dv = u - np.float32(side * idt.eye_dx), v - np.float32(idt.eye_y + 0.12)
        blush = np.exp(-(du * du + dv * dv) / np.float32(2 * (0.25 * hw) ** 2)) * np.float32(0.08)
        albedo = albedo * (1.0 + blush[..., None] * np.array([0.3, -0.4, -0.3], dtype=np.float32))
    _blend(face, canvas.edge(head_sd, 1.2), albedo)

    yaw = pose.yaw
    _draw_features(image, canvas, idt, pose, yaw)

    # Hair on top of the head (or stubble), and an optional beard.
    hair_tex_face = hair_tex[head_rows, head_cols]
    if idt.hair_style != "shaved":
        outer = _ellipse_sd(u, v, 0.0, -0.02, hw + grow, hh + grow * 1.2)
        line = (
            v + np.float32(idt.hairline * hh) - np.float32(0.6) * (u - np.float32(yaw)) ** 2 / np.float32(hw)
        )
        _blend(face, canvas.edge(np.maximum(outer, line), 1.5), hair_colour * hair_tex_face)
    else:
        outer = _ellipse_sd(u, v, 0.0, 0.0, hw, hh)
        stubble = canvas.edge(np.maximum(outer, v + np.float32(0.75 * hh)), 2.0) * np.float32(0.35)
        _blend(face, stubble, hair_colour * hair_tex_face)
    if idt.beard > 0:
        beard_sd = np.maximum(head_sd, np.float32(idt.mouth_y - 0.05) - v)
        density = np.clip(0.7 + 0.3 * strands[head_rows, head_cols], 0, 1)
        _blend(
            face, canvas.edge(beard_sd, 3.0) * np.float32(idt.beard) * density, hair_colour * hair_tex_face
        )

    # Lambertian shading on an ellipsoid around the head.
    nx = u / np.float32(hw * 1.15)
    ny = v / np.float32(hh * 1.1)
    q2 = nx * nx + ny * ny
    nz = np.sqrt(np.clip(1.0 - q2, 0.02, 1.0))
    lz = math.sqrt(max(0.05, 1.0 - pose.light_x**2 - pose.light_y**2))
    lambert = np.clip(
        nx * np.float32(pose.light_x) + ny * np.float32(pose.light_y) + nz * np.float32(lz), 0, 1
    )
    shade = np.float32(pose.ambient) + np.float32(1.0 - pose.ambient) * lambert
    body = np.clip(1.0 - q2, 0.0, 0.3) / np.float32(0.3)
    face *= (1.0 + body * (shade * np.float32(1.1) - 1.0))[..., None]

    if idt.glasses:
        _draw_glasses(image, canvas, idt, yaw)
    image *= np.float32(pose.exposure)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def _draw_features(image: np.ndarray, canvas: _Canvas, idt: Identity, pose: Pose, yaw: float) -> None:
    skin = np.asarray(idt.skin, dtype=np.float32)
    brow_colour = np.asarray(idt.hair, dtype=np.float32) * 0.8 + skin * 0.1
    for side in (-1.0, 1.0):
        ex = side * idt.eye_dx + yaw
        ey = idt.eye_y
        # Brow: a tilted, arched thin ellipse above the eye.
        by = ey - idt.eye_h - idt.brow_gap * 0.6
        rows, cols = canvas.window(ex, by, idt.eye_w * 1.5)
        uu, vv = canvas.local(rows, cols)
        arch = vv + np.float32(0.8) * (uu - np.float32(ex)) ** 2 / np.float32(idt.eye_w * 2)
        brow_sd = _ellipse_sd(uu, arch, ex, by, idt.eye_w * 1.25, idt.brow_thick, side * idt.brow_tilt)
        _blend(image[rows, cols], canvas.edge(brow_sd, 1.3) * np.float32(0.9), brow_colour)

        # Eye: sclera, iris, pupil, lid line, catch-light.
        eh = idt.eye_h * pose.eye_open
        rows, cols = canvas.window(ex, ey, idt.eye_w * 1.3)
        uu, vv = canvas.local(rows, cols)
        sclera_sd = _ellipse_sd(uu, vv, ex, ey, idt.eye_w, eh)
        sclera = canvas.edge(sclera_sd)
        patch = image[rows, cols]
        _blend(patch, sclera, (0.88, 0.86, 0.83))
        iris_r = idt.eye_h * 0.85
        iris_u = ex + yaw * 0.4
        iris = canvas.edge(np.maximum(_ellipse_sd(uu, vv, iris_u, ey, iris_r, iris_r), sclera_sd))
        _blend(patch, iris, idt.iris)
        pupil = canvas.edge(
            np.maximum(_ellipse_sd(uu, vv, iris_u, ey, iris_r * 0.45, iris_r * 0.45), sclera_sd)
        )
        _blend(patch, pupil, (0.03, 0.03, 0.03))
        lid_sd = np.maximum(np.abs(sclera_sd) - np.float32(idt.eye_h * 0.12), vv - np.float32(ey))
        _blend(patch, canvas.edge(lid_sd) * np.float32(0.85), skin * 0.25)
        glint_u, glint_v = iris_u - iris_r * 0.3, ey - iris_r * 0.3
        glint = canvas.edge(_ellipse_sd(uu, vv, glint_u, glint_v, iris_r * 0.18, iris_r * 0.18)) * sclera
        _blend(patch, glint, (0.97, 0.97, 0.97))

    # Nose: a side shadow along the ridge, nostrils and a highlight on the tip.
    nu = yaw * 1.3
    top, tip = idt.eye_y + 0.02, idt.eye_y + idt.nose_len
    rows, cols = canvas.window(nu, (top + tip) / 2, idt.nose_len * 0.8)
    uu, vv = canvas.local(rows, cols)
    patch = image[rows, cols]
    along = np.clip((vv - np.float32(top)) / np.float32(tip - top), 0.0, 1.0)
    window = along * (1.0 - along) * 4.0 * (vv < tip)
    side_shadow = np.exp(-(((uu - np.float32(nu + idt.nose_w * 0.55)) / np.float32(idt.nose_w * 0.3)) ** 2))
    patch *= (1.0 - np.float32(0.18) * window * side_shadow)[..., None]
    for side in (-1.0, 1.0):
        nostril_sd = _ellipse_sd(
            uu, vv, nu + side * idt.nose_w * 0.45, tip, idt.nose_w * 0.28, idt.nose_w * 0.15
        )
        _blend(patch, canvas.edge(nostril_sd, 1.5) * np.float32(0.7), skin * 0.3)
    highlight = np.exp(
        -((uu - np.float32(nu)) ** 2 + (vv - np.float32(tip - 0.02)) ** 2) / np.float32(0.0006)
    )
    patch += (highlight * np.float32(0.06))[..., None]

    # Mouth: lips, an opening with teeth, bent by the smile.
    mu, my = yaw * 1.1, idt.mouth_y
    open_h = idt.mouth_w * 0.35 * pose.mouth_open
    rows, cols = canvas.window(mu, my, idt.mouth_w * 1.3)
    uu, vv = canvas.local(rows, cols)
    patch = image[rows, cols]
    bent = vv + np.float32(pose.smile * 0.9) * (uu - np.float32(mu)) ** 2 / np.float32(idt.mouth_w * 2)
    lips_sd = _ellipse_sd(uu, bent, mu, my, idt.mouth_w, idt.mouth_w * 0.18 + open_h * 0.6)
    _blend(patch, canvas.edge(lips_sd, 1.2), idt.lip)
    if open_h > 0.002:
        inner_sd = _ellipse_sd(uu, bent, mu, my, idt.mouth_w * 0.8, open_h * 0.55)
        inner = canvas.edge(inner_sd)
        _blend(patch, inner, (0.12, 0.04, 0.04))
        teeth_sd = np.maximum(inner_sd, bent - np.float32(my - open_h * 0.15))
        _blend(patch, canvas.edge(teeth_sd), (0.85, 0.83, 0.76))
    else:
        line_sd = np.abs(bent - np.float32(my)) - np.float32(canvas.px * 0.4 / canvas.scale)
        line_sd = np.maximum(line_sd, lips_sd + np.float32(idt.mouth_w * 0.05))
        _blend(patch, canvas.edge(line_sd) * np.float32(0.8), np.asarray(idt.lip, dtype=np.float32) * 0.45)


def _draw_glasses(image: np.ndarray, canvas: _Canvas, idt: Identity, yaw: float) -> None:
    frame = (0.08, 0.07, 0.07)
    for side in (-1.0, 1.0):
        ex = side * idt.eye_dx + yaw
        rows, cols = canvas.window(ex, idt.eye_y, idt.eye_w * 2.0)
        uu, vv = canvas.local(rows, cols)
        lens_sd = _ellipse_sd(uu, vv, ex, idt.eye_y, idt.eye_w * 1.6, idt.eye_h * 2.6)
        patch = image[rows, cols]
        patch *= (1.0 - np.float32(0.08) * canvas.edge(lens_sd))[..., None]
        ring = canvas.edge(np.abs(lens_sd) - np.float32(0.008))
        _blend(patch, ring, frame)
    rows, cols = canvas.window(yaw, idt.eye_y - idt.eye_h, idt.eye_dx)
    uu, vv = canvas.local(rows, cols)
    bridge_sd = np.maximum(
        np.abs(vv - np.float32(idt.eye_y - idt.eye_h)) - np.float32(0.006),
        np.abs(uu - np.float32(yaw)) - np.float32(idt.eye_dx - idt.eye_w * 1.5),
    )
    _blend(image[rows, cols], canvas.edge(bridge_sd), frame)


def region_mask(params: FaceParams, size: int, region: str, feather: float) -> np.ndarray:
    """Soft ``(size, size)`` mask of a facial region, feathered by ``feather`` (normalised units).

    Regions: ``inner_face`` (brows to chin, the area a face swap replaces), ``mouth``, ``eyes``,
    ``brows`` and ``hair``.
    """
    idt, pose = params.identity, params.pose
    canvas = _Canvas(size, pose)
    u, v = canvas.local()
    yaw = pose.yaw
    if region == "inner_face":
        top = idt.eye_y - idt.eye_h - idt.brow_gap * 0.6 - idt.brow_thick * 2
        bottom = idt.mouth_y + idt.mouth_w * 0.55
        sd = _ellipse_sd(u, v, yaw * 0.8, (top + bottom) / 2, idt.head_w * 0.82, (bottom - top) / 2)
    elif region == "mouth":
        sd = _ellipse_sd(u, v, yaw * 1.1, idt.mouth_y, idt.mouth_w * 1.35, idt.mouth_w * 0.65)
    elif region == "eyes":
        sd = np.minimum(
            *(
                _ellipse_sd(u, v, s * idt.eye_dx + yaw, idt.eye_y, idt.eye_w * 1.6, idt.eye_h * 2.2)
                for s in (-1, 1)
            )
        )
    elif region == "brows":
        by = idt.eye_y - idt.eye_h - idt.brow_gap * 0.6
        sd = np.minimum(
            *(
                _ellipse_sd(u, v, s * idt.eye_dx + yaw, by, idt.eye_w * 1.7, idt.brow_thick * 3.5)
                for s in (-1, 1)
            )
        )
    elif region == "hair":
        grow = idt.hair_volume * 2.0 + 0.04
        outer = _ellipse_sd(u, v, 0.0, -0.02, idt.head_w + grow, idt.head_h + grow * 1.2)
        line = v + np.float32(idt.hairline * idt.head_h * 0.8)
        sd = np.maximum(outer, line)
        if idt.hair_style == "long":
            back = _ellipse_sd(u, v, 0.0, 0.15, idt.head_w * 1.35, idt.head_h * 1.4)
            face = _ellipse_sd(u, v, 0.0, 0.05, idt.head_w * 0.95, idt.head_h * 1.05)
            sd = np.minimum(sd, np.maximum(back, -face))
    else:
        raise ValueError(f"unknown face region {region!r}; valid: {list(REGIONS)}")
    # Feathered edge: a smooth ramp of width ``feather`` centred on the outline, then a light blur.
    width = np.float32(max(feather, canvas.px) / pose.scale)
    mask = np.clip(0.5 - sd / width, 0.0, 1.0)
    mask = mask * mask * (3.0 - 2.0 * mask)
    return gaussian_blur(mask.astype(np.float32), 0.6)

"""Why a detector scored an image as it did: a panel with Grad-CAM, the richest patch and its SRM residual.

For one image the panel shows the model input, a Grad-CAM heat map of the image branch for the *fake*
logit (``pytorch_grad_cam``), the patch the noise branch selected (outlined on the input and shown
enlarged), that patch's SRM noise residual, P(fake), and, when the checkpoint holds its text tower, the
cosine similarity between the image feature and every prompt of the prompt set, level by level.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mfclip.prompts import LEVEL_NAMES, PromptSet, load_prompt_set, tokenize
from mfclip.schema import class_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mfclip.inference.detector import Detector

# Prompts shown per level in the panel (the generator level can list dozens).
_PROMPTS_PER_LEVEL = 6


@dataclass(frozen=True)
class PromptSimilarity:
    """Cosine similarity between the image feature and one prompt of a level (1–4)."""

    level: int
    level_name: str
    prompt: str
    similarity: float


@dataclass
class Explanation:
    """Everything the explanation panel shows; ``save`` / ``to_png`` render it."""

    image: np.ndarray  # (S, S, 3) uint8: what the model saw
    p_fake: float
    label: str
    threshold: float
    heatmap: np.ndarray | None = None  # (S, S) float32 in [0, 1]: Grad-CAM for the fake logit
    patch_box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) in model-input pixels
    patch_mode: str | None = None
    srm: np.ndarray | None = None  # (h, w, 3) float32: SRM residual of the patch, one channel per kernel
    prompt_similarities: list[PromptSimilarity] = field(default_factory=list)
    face_box: tuple[int, int, int, int] | None = None  # in the original image, when a face was cropped
    source: str | None = None
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------------
    def figure(self) -> Figure:
        """The panel as a matplotlib Figure (Agg canvas, no pyplot state)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        columns = 2 + (self.patch_box is not None) + (self.srm is not None)
        with_prompts = bool(self.prompt_similarities)
        height = 3.6 + (3.6 if with_prompts else 0.0)
        figure = Figure(figsize=(max(3.2 * columns, 9.0), height), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        if with_prompts:
            images_row, prompts_row = figure.subfigures(2, 1, height_ratios=[1.0, 1.0])
        else:
            images_row, prompts_row = figure, None
        verdict = f"P(fake) = {self.p_fake:.4f}  →  {self.label}  (threshold {self.threshold:g})"
        title = f"{Path(self.source).name}: {verdict}" if self.source else verdict
        figure.suptitle(title, fontsize=12, color="#b3261e" if self.label == "fake" else "#1b7f3b")
        axes = list(np.atleast_1d(images_row.subplots(1, columns)))

        axis = axes.pop(0)
        axis.imshow(self.image)
        if self.patch_box is not None:
            x0, y0, x1, y1 = self.patch_box
            outline = Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="#ffd400")
            outline.set_linewidth(2)
            axis.add_patch(outline)
        axis.set_title("input" + (" + noise patch" if self.patch_box is not None else ""), fontsize=10)
        _bare(axis)

        axis = axes.pop(0)
        if self.heatmap is not None:
            from pytorch_grad_cam.utils.image import show_cam_on_image

            overlay = show_cam_on_image(self.image.astype(np.float32) / 255.0, self.heatmap, use_rgb=True)
            axis.imshow(overlay)
            axis.set_title("Grad-CAM (fake logit)", fontsize=10)
        else:
            axis.imshow(self.image)
            axis.set_title("Grad-CAM unavailable", fontsize=10)
        _bare(axis)

        if self.patch_box is not None:
            x0, y0, x1, y1 = self.patch_box
            axis = axes.pop(0)
            axis.imshow(self.image[y0:y1, x0:x1], interpolation="nearest")
            axis.set_title(f"{self.patch_mode or 'selected'} patch", fontsize=10)
            _bare(axis)
        if self.srm is not None:
            axis = axes.pop(0)
            axis.imshow(_residual_to_rgb(self.srm), interpolation="nearest")
            axis.set_title("SRM residual (3 kernels as RGB)", fontsize=10)
            _bare(axis)

        if prompts_row is not None:
            _draw_prompts(prompts_row.subplots(), self.prompt_similarities)
        if self.notes:
            figure.text(0.01, 0.005, "; ".join(self.notes), fontsize=7, color="#5b6475", va="bottom")
        return figure

    def to_png(self, dpi: int = 100) -> bytes:
        """The panel as PNG bytes."""
        return self.to_bytes("png", dpi=dpi)

    def to_bytes(self, fmt: str = "png", dpi: int = 100) -> bytes:
        """The panel encoded as ``fmt``: png, jpeg, pdf or svg."""
        if fmt not in PANEL_FORMATS.values():
            raise ValueError(
                f"unknown panel format {fmt!r}; valid: {', '.join(sorted(set(PANEL_FORMATS.values())))}"
            )
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format=fmt, dpi=dpi)
        return buffer.getvalue()

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Write the panel atomically in the format its suffix names (.png, .jpg, .pdf, .svg)."""
        from mfclip.utils.io import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, self.to_bytes(panel_format(path), dpi=dpi))
        return path


# File suffixes the panel can be saved as, and the matplotlib format each one names.
PANEL_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}


def panel_format(path: str | Path) -> str:
    """The format a panel file's suffix names; a :class:`ValueError` naming the file for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in PANEL_FORMATS:
        raise ValueError(
            f"{path}: cannot write the panel as {suffix or '(no suffix)'!r}; "
            f"end the file name in {', '.join(PANEL_FORMATS)}"
        )
    return PANEL_FORMATS[suffix]


def _bare(axis: Any) -> None:
    axis.set_xticks([])
    axis.set_yticks([])


def _residual_to_rgb(residual: np.ndarray) -> np.ndarray:
    scale = float(np.percentile(np.abs(residual), 99.0)) or 1.0
    return np.clip(0.5 + residual / (2.0 * scale), 0.0, 1.0)


def _draw_prompts(axis: Any, similarities: list[PromptSimilarity]) -> None:
    rows: list[PromptSimilarity] = []
    for level in sorted({s.level for s in similarities}):
        in_level = sorted((s for s in similarities if s.level == level), key=lambda s: -s.similarity)
        rows.extend(in_level[:_PROMPTS_PER_LEVEL])
    labels = [f"L{s.level} {s.prompt}" for s in rows]
    values = [s.similarity for s in rows]
    palette = ["#2f5bd3", "#d37f2f", "#2fa36b", "#9b3fd3"]
    colors = [palette[(s.level - 1) % len(palette)] for s in rows]
    positions = np.arange(len(rows))
    axis.barh(positions, values, color=colors)
    axis.set_yticks(positions, labels, fontsize=7)
    axis.invert_yaxis()
    axis.axvline(0.0, color="#888888", linewidth=0.8)
    axis.set_xlabel("cosine similarity of the image feature to each prompt, best first", fontsize=8)
    axis.tick_params(axis="x", labelsize=7)


class _Logits(nn.Module):
    """The model's (B, 2) logits: Grad-CAM's target is column 1, the fake logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).logits


def grad_cam(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Grad-CAM heat maps (B, S, S) in [0, 1] of the model's image branch for the fake logit."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layers = model.explain_target_layers()
    reshape = model.explain_reshape_transform()
    targets = [ClassifierOutputTarget(1)] * images.shape[0]
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        GradCAM(model=_Logits(model), target_layers=layers, reshape_transform=reshape) as cam,
    ):
        # The input requires a gradient so that frozen towers (a linear probe, RINE) still carry one.
        maps = cam(input_tensor=images.clone().requires_grad_(True), targets=targets)
    return np.asarray(maps, dtype=np.float32)


def _noise_settings(model: nn.Module) -> Any | None:
    vision = getattr(getattr(model, "config", None), "vision", None)
    if vision is None or not getattr(vision, "noise_branch", False):
        return None
    return vision.noise


def _patch_box(index: int, grid: int, size: int) -> tuple[int, int, int, int]:
    if index < 0:
        return (0, 0, size, size)  # "whole": the noise branch sees the whole image
    side = size // grid
    row, col = divmod(int(index), grid)
    return (col * side, row * side, (col + 1) * side, (row + 1) * side)


def prompt_similarities(
    model: nn.Module, image_features: torch.Tensor, prompt_set: str | PromptSet = "default"
) -> list[PromptSimilarity]:
    """Cosine similarity of one image feature (D,) to every prompt of ``prompt_set``, by level.

    ``prompt_set`` is a prompt set, or the name or path of one. Empty when the model has no text tower
    (a baseline, or an MFCLIP trained without text losses).
    """
    text_tower = getattr(model, "text", None)
    if text_tower is None or not hasattr(text_tower, "encode_prompt_table"):
        return []
    prompts = prompt_set if isinstance(prompt_set, PromptSet) else load_prompt_set(prompt_set)
    levels: list[tuple[int, list[str]]] = [
        (1, [prompts.real, prompts.levels.authenticity]),
        (2, [prompts.real, *prompts.levels.forgery_type.values()]),
        (3, [prompts.real, *prompts.levels.family.values()]),
        (4, [prompts.real, *(prompts.levels.generator.format(generator=g) for g in prompts.generators)]),
    ]
    texts = sorted({text for _, level_texts in levels for text in level_texts})
    device = image_features.device
    with torch.no_grad():
        features = text_tower.encode_prompt_table(tokenize(texts).to(device))
        text_features = nn.functional.normalize(features.float(), dim=-1)
        image = nn.functional.normalize(image_features.float().reshape(1, -1), dim=-1)
        scores = (image.to(text_features.device) @ text_features.T)[0].tolist()
    by_text = dict(zip(texts, scores, strict=True))
    return [
        PromptSimilarity(level, LEVEL_NAMES[level - 1], text, float(by_text[text]))
        for level, level_texts in levels
        for text in dict.fromkeys(level_texts)
    ]


def explain(detector: Detector, image: Any, threshold: float = 0.5) -> Explanation:
    """Explain one image (any input :meth:`Detector.predict` accepts) with ``detector``'s model."""
    model = detector.model
    source = str(image) if isinstance(image, (str, Path)) else None
    prepared = detector.prepare(image)
    x = prepared.tensor.unsqueeze(0).to(detector.device, detector.dtype)
    notes: list[str] = []
    with torch.no_grad():
        output = model(x)
    p_fake = float(output.p_fake[0])
    pixels = (prepared.tensor.permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()

    heatmap = None
    try:
        heatmap = grad_cam(model, x)[0]
    except NotImplementedError as exc:
        notes.append(f"no Grad-CAM: {exc}")

    patch_box = srm = None
    patch_mode = None
    noise = _noise_settings(model)
    if noise is not None and "patch_index" in output.extras:
        from mfclip.ops import srm_residual

        index = int(output.extras["patch_index"][0])
        patch_box = _patch_box(index, noise.grid, detector.image_size)
        patch_mode = "whole-image" if index < 0 else str(noise.patch_mode)
        x0, y0, x1, y1 = patch_box
        patch = prepared.tensor[None, :, y0:y1, x0:x1].float()
        residual = srm_residual(patch, input_scale=noise.srm_input_scale)
        srm = residual[0].permute(1, 2, 0).cpu().numpy()

    similarities: list[PromptSimilarity] = []
    if output.image_features is not None:
        # The prompt set the model was trained with, as recorded in its checkpoint.
        similarities = prompt_similarities(model, output.image_features[0], detector.metadata.prompts())

    return Explanation(
        image=pixels,
        p_fake=p_fake,
        label=class_name(p_fake, threshold),
        threshold=threshold,
        heatmap=heatmap,
        patch_box=patch_box,
        patch_mode=patch_mode,
        srm=srm,
        prompt_similarities=similarities,
        face_box=prepared.box,
        source=source,
        notes=notes,
    )

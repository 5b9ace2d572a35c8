"""Turn any input image into what a detector takes: an optional face crop, then the evaluation transform.

The transform is the data pipeline's own evaluation transform (resize the shorter side to the model's
image size, centre crop), so the Detector, ``mfclip predict``, the server and evaluation all see the same
pixels. The Preprocessor holds no model: it is what DataLoader workers pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mfclip.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image, to_rgb
from mfclip.data.transforms import ImageTransform, TransformConfig

FACE_DETECTORS = ("mtcnn", "haar")
# The face pipeline's defaults: the square around the box grows by 30 %, crops are 256 px.
DEFAULT_FACE_MARGIN = 0.3
DEFAULT_FACE_CROP_SIZE = 256


@dataclass(frozen=True)
class Prepared:
    """A model-ready image (3, S, S) float in [0, 1] and the face box it was cut from, if any."""

    tensor: torch.Tensor
    box: tuple[int, int, int, int] | None = None


def to_pil(image: Any, name: str = "<image>") -> Image.Image:
    """An RGB PIL image from a PIL image, an HxWx3 array (uint8, or float in [0, 1]) or a (3, H, W) tensor
    (uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return to_rgb(image, name)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: expected a (3, H, W) RGB tensor, got shape {tuple(image.shape)}")
        array = image.detach().cpu().permute(1, 2, 0).numpy()
        return to_pil(array, name)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: expected an HxWx3 RGB array, got shape {image.shape}")
        if image.dtype == np.uint8:
            return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
        if np.issubdtype(image.dtype, np.floating):
            low, high = float(np.nanmin(image)), float(np.nanmax(image))
            if np.isnan(image).any() or low < 0.0 or high > 1.0:
                raise ValueError(f"{name}: float images must hold values in [0, 1], got [{low:g}, {high:g}]")
            return Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="RGB")
        raise ValueError(f"{name}: unsupported array dtype {image.dtype}; use uint8 or float in [0, 1]")
    raise ValueError(
        f"{name}: unsupported input type {type(image).__name__}; "
        "give a path, bytes, a PIL image, an HxWx3 numpy array or a (3, H, W) tensor"
    )


class Preprocessor:
    """Decode, face-crop (optional) and transform images for a model of ``image_size`` pixels."""

    def __init__(
        self,
        image_size: int,
        face_detector: str | None = None,
        face_margin: float = DEFAULT_FACE_MARGIN,
        face_crop_size: int = DEFAULT_FACE_CROP_SIZE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        transform: TransformConfig | None = None,
    ) -> None:
        if face_detector is not None and face_detector not in FACE_DETECTORS:
            raise ValueError(f"unknown face detector {face_detector!r}; valid: {', '.join(FACE_DETECTORS)}")
        self.image_size = int(image_size)
        self.face_detector = face_detector
        self.face_margin = face_margin
        self.face_crop_size = max(int(face_crop_size), self.image_size)
        self.max_pixels = max_pixels
        # The evaluation transform of the data pipeline (no augmentation).
        self.transform = ImageTransform(self.image_size, transform, train=False)
        self._faces: Any = None  # built lazily, once per process (DataLoader workers build their own)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_faces"] = None
        return state

    def load(self, source: str | Path | bytes) -> Image.Image:
        """Decode a file or bytes into an RGB image (:class:`ImageDecodeError` naming the file if not)."""
        return load_image(source, max_pixels=self.max_pixels)

    def to_image(self, source: Any) -> Image.Image:
        """Any accepted input (path, bytes, PIL, array, tensor) as an RGB PIL image."""
        if isinstance(source, (str, Path, bytes, bytearray)):
            from mfclip.data.video import is_video_path

            if not isinstance(source, (bytes, bytearray)) and is_video_path(source):
                raise ImageDecodeError(str(source), "is a video: use predict_video() or `mfclip predict`")
            return self.load(bytes(source) if isinstance(source, bytearray) else source)
        return to_pil(source)

    def _face_detector(self) -> Any:
        if self._faces is None:
            from mfclip.face import get_detector

            self._faces = get_detector(self.face_detector, device="cpu")
        return self._faces

    def _crop(self, rgb: np.ndarray, faces: list[Any]) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
        if not faces:
            return rgb, None  # no face found: score the whole image
        from mfclip.face import crop_face

        face = faces[0]  # detectors return the largest first
        box = (round(face.x0), round(face.y0), round(face.x1), round(face.y1))
        return crop_face(rgb, face, margin=self.face_margin, size=self.face_crop_size), box

    def __call__(self, image: Any) -> Prepared:
        """Face-crop (when a detector is set) and transform one image."""
        pil = image if isinstance(image, Image.Image) and image.mode == "RGB" else to_pil(image)
        if self.face_detector is None:
            return Prepared(self.transform(pil))
        rgb = np.asarray(pil)
        crop, box = self._crop(rgb, self._face_detector().detect(rgb))
        return Prepared(self.transform(Image.fromarray(crop)), box)

    def prepare_video(self, path: str | Path, frames: int) -> torch.Tensor:
        """``frames`` uniformly sampled video frames, face-cropped when a detector is set: (n, 3, S, S)."""
        from mfclip.data.video import sample_frames

        rgbs = [rgb for _, rgb in sample_frames(path, frames)]
        if self.face_detector is not None:
            detections = self._face_detector().detect_batch(rgbs)
            rgbs = [self._crop(rgb, faces)[0] for rgb, faces in zip(rgbs, detections, strict=True)]
        return torch.stack([self.transform(Image.fromarray(rgb)) for rgb in rgbs])

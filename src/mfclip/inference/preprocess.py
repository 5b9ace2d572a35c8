"""Turn any input image into what a detector takes: an optional face crop, then the model's transform.

Both steps follow the model's input contract (:mod:`mfclip.inputs`): the face is cut by
:func:`mfclip.face.cut_face` with the crop settings the training images were made with, and the image is
resized by :meth:`~mfclip.data.transforms.ImageTransform.for_model`, so the Detector, ``mfclip predict``,
the server and evaluation see the pixels training saw. The Preprocessor holds no model: it is what
DataLoader workers pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mfclip.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image, to_rgb
from mfclip.data.transforms import ImageTransform
from mfclip.inputs import FaceCropConfig, InputConfig

#: Detectors that can be asked for by name when scoring; ``auto`` uses the model's own crop settings.
FACE_DETECTORS = ("mtcnn", "haar")
FACE_CHOICES = ("auto", "off", *FACE_DETECTORS)


def face_crop_for(contract: InputConfig, face_detector: str | None) -> FaceCropConfig | None:
    """The face crop to apply when scoring a model with input ``contract``; None for no crop.

    ``face_detector``: ``auto`` crops as the training images were cropped (``contract.face``; no crop when
    they were not); ``off`` or None never crops; ``mtcnn`` / ``haar`` crop with that detector and the
    model's crop geometry (alignment, margin, scale, size), or the default box crop when the model
    records none.
    """
    choice = "off" if face_detector is None else str(face_detector).strip().lower()
    if choice not in FACE_CHOICES:
        raise ValueError(f"unknown face detector {face_detector!r}; valid: {', '.join(FACE_CHOICES)}")
    if choice == "off":
        return None
    if choice == "auto":
        return contract.face
    recorded = contract.face
    if recorded is None or recorded.detector == "none":
        return FaceCropConfig(detector=choice)  # type: ignore[arg-type]
    if recorded.align != "none" and choice != "mtcnn":
        raise ValueError(
            f"this model was trained on {recorded.align}-aligned faces, which need the landmarks only mtcnn "
            f"gives; use --face-detect mtcnn (or auto), not {choice}"
        )
    options = recorded.detector_options if choice == recorded.detector else {}
    return recorded.model_copy(update={"detector": choice, "detector_options": options})


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
    """Decode, face-crop (when ``face`` is set) and transform images with ``transform``."""

    def __init__(
        self,
        transform: ImageTransform,
        face: FaceCropConfig | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if transform.train:
            raise ValueError("scoring needs an evaluation transform (train=False)")
        self.transform = transform
        self.image_size = transform.image_size
        self.face = face
        self.max_pixels = max_pixels
        self._faces: Any = None  # built lazily, once per process (DataLoader workers build their own)

    @property
    def face_detector(self) -> str | None:
        """The face detector in use, or None when images are scored as given."""
        return self.face.detector if self.face is not None else None

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

            assert self.face is not None
            self._faces = get_detector(self.face.detector, device="cpu", **self.face.detector_options)
        return self._faces

    def _crop(self, rgb: np.ndarray, faces: list[Any]) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
        from mfclip.face import cut_face, usable_faces

        assert self.face is not None
        kept = usable_faces(faces, self.face.min_score)
        if not kept:
            return rgb, None  # no face found: score the whole image
        face = kept[0]  # detectors return the largest first, as preprocess keeps it
        box = (round(face.x0), round(face.y0), round(face.x1), round(face.y1))
        return cut_face(rgb, face, self.face), box

    def __call__(self, image: Any) -> Prepared:
        """Face-crop (when a crop is set) and transform one image."""
        pil = image if isinstance(image, Image.Image) and image.mode == "RGB" else to_pil(image)
        if self.face is None:
            return Prepared(self.transform(pil))
        rgb = np.asarray(pil)
        crop, box = self._crop(rgb, self._face_detector().detect(rgb))
        return Prepared(self.transform(Image.fromarray(crop)), box)

    def prepare_video(self, path: str | Path, frames: int) -> torch.Tensor:
        """``frames`` uniformly sampled video frames, face-cropped when a crop is set: (n, 3, S, S)."""
        from mfclip.data.video import sample_frames

        rgbs = [rgb for _, rgb in sample_frames(path, frames)]
        if self.face is not None:
            detections = self._face_detector().detect_batch(rgbs)
            rgbs = [self._crop(rgb, faces)[0] for rgb, faces in zip(rgbs, detections, strict=True)]
        return torch.stack([self.transform(Image.fromarray(rgb)) for rgb in rgbs])

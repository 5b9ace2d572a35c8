"""Face detectors behind one interface: ``get_detector(name).detect(rgb) -> list[FaceBox]``.

- ``mtcnn``: MTCNN from facenet-pytorch (weights ship in its wheel); boxes, probabilities and five
  landmarks (left eye, right eye, nose, left and right mouth corner, in image coordinates).
- ``haar``: OpenCV's frontal-face Haar cascade; boxes only, the score is the cascade's final-stage weight
  (a confidence, not a probability).
- ``none``: no detection; the centred square of the image, for sets whose faces are already aligned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class FaceDetectorError(ValueError):
    """A detector cannot be built (unknown name, missing package, bad option)."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box corners in pixels of the input image, a score, optional 5-point landmarks."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    landmarks: np.ndarray | None = None  # (5, 2) float32: left eye, right eye, nose, mouth left, right

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"expected an HxWx3 RGB array, got {type(rgb).__name__} of shape {shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB array, got dtype {rgb.dtype}")
    return np.ascontiguousarray(rgb)


class FaceDetector(ABC):
    """Finds faces in RGB images. Boxes come back largest first."""

    name: str = ""
    #: Whether :attr:`FaceBox.landmarks` is filled (needed for alignment).
    gives_landmarks: bool = False

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in one ``HxWx3`` uint8 RGB image, largest first."""
        faces = self._detect(_check_rgb(rgb))
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        """Faces in several images (video frames); detectors that can batch override this."""
        return [self.detect(image) for image in images]

    @abstractmethod
    def _detect(self, rgb: np.ndarray) -> list[FaceBox]: ...


class MTCNNDetector(FaceDetector):
    """MTCNN (facenet-pytorch) with its bundled weights; runs on any torch device."""

    name = "mtcnn"
    gives_landmarks = True

    def __init__(
        self,
        device: str = "cpu",
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        batch_size: int | None = None,
    ) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise FaceDetectorError(
                "the mtcnn detector needs facenet-pytorch: pip install --no-deps facenet-pytorch "
                f"(or use --detector haar) [{exc}]"
            ) from None
        from mfclip.utils.device import resolve_device

        if min_face_size < 12:
            raise FaceDetectorError(f"mtcnn min_face_size must be at least 12, got {min_face_size}")
        self.device = resolve_device(device)
        self.min_face_size = int(min_face_size)
        # Batching frames pays off on a GPU; on a CPU it only multiplies memory.
        if batch_size is None:
            batch_size = 16 if self.device.type != "cpu" else 1
        self.batch_size = max(int(batch_size), 1)
        self._model = MTCNN(
            keep_all=True,
            min_face_size=self.min_face_size,
            thresholds=list(thresholds),
            factor=factor,
            select_largest=True,
            device=self.device,
        ).eval()

    def _detect(self, rgb: np.ndarray) -> list[FaceBox]:
        return self._run([rgb])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        images = [_check_rgb(image) for image in images]
        results: list[list[FaceBox] | None] = [None] * len(images)
        # MTCNN batches only equal-sized images; video frames always are.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for positions in by_shape.values():
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                for i, faces in zip(chunk, self._run([images[i] for i in chunk]), strict=True):
                    results[i] = sorted(faces, key=lambda face: face.area, reverse=True)
        return [faces or [] for faces in results]

    def _run(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        import torch

        height, width = images[0].shape[:2]
        # MTCNN's image pyramid is empty (and it raises) when the image is smaller than the smallest face.
        if min(height, width) < self.min_face_size:
            return [[] for _ in images]
        with torch.inference_mode():
            boxes, probs, points = self._model.detect(np.stack(images), landmarks=True)
        return [_to_face_boxes(*found) for found in zip(boxes, probs, points, strict=True)]


def _to_face_boxes(boxes: Any, probs: Any, points: Any) -> list[FaceBox]:
    # facenet-pytorch builds object arrays (with None for "no face"); normalise to float arrays.
    if boxes is None or len(boxes) == 0 or any(b is None for b in np.ravel(np.asarray(probs, dtype=object))):
        return []
    boxes = np.asarray(np.stack([np.asarray(b, dtype=np.float32) for b in boxes]), dtype=np.float32)
    probs = np.asarray([float(p) for p in probs], dtype=np.float32)
    points = np.asarray(np.stack([np.asarray(p, dtype=np.float32) for p in points]), dtype=np.float32)
    return [
        FaceBox(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(p), pts.reshape(5, 2).copy())
        for b, p, pts in zip(boxes, probs, points, strict=True)
    ]


class HaarDetector(FaceDetector):
    """OpenCV's Haar cascade (``haarcascade_frontalface_default.xml``); CPU only, no landmarks."""

    name = "haar"

    def __init__(
        self,
        device: str = "cpu",
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
    ) -> None:
        import cv2

        del device  # OpenCV cascades run on the CPU
        data_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = cascade if "/" in cascade or "\\" in cascade else data_dir + cascade
        if not hasattr(cv2, "CascadeClassifier"):
            raise FaceDetectorError(
                "this OpenCV build has no CascadeClassifier; install opencv-python-headless<5"
            )
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FaceDetectorError(f"{path}: Haar cascade not found or unreadable")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def _detect(self, rgb: np.ndarray) -> list[FaceBox]:
        import cv2

        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        rects, _levels, weights = self._cascade.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        weights = np.ravel(np.asarray(weights, dtype=np.float64))
        return [
            FaceBox(float(x), float(y), float(x + w), float(y + h), float(weight))
            for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), weights, strict=True)
        ]


class CenterCropDetector(FaceDetector):
    """No detection: one box, the largest centred square, for already face-centred images."""

    name = "none"

    def __init__(self, device: str = "cpu") -> None:
        del device

    def _detect(self, rgb: np.ndarray) -> list[FaceBox]:
        height, width = rgb.shape[:2]
        side = min(height, width)
        x0 = (width - side) / 2.0
        y0 = (height - side) / 2.0
        return [FaceBox(x0, y0, x0 + side, y0 + side, 1.0)]


_DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "mtcnn": MTCNNDetector,
    "haar": HaarDetector,
    "none": CenterCropDetector,
}


def list_detectors() -> list[str]:
    """Names accepted by :func:`get_detector`."""
    return list(_DETECTORS)


def get_detector(name: str, device: str = "cpu", **kwargs: Any) -> FaceDetector:
    """Build a face detector by name (``mtcnn``, ``haar`` or ``none``); ``kwargs`` go to its constructor."""
    try:
        factory = _DETECTORS[name]
    except KeyError:
        raise FaceDetectorError(f"unknown face detector {name!r}; choose one of {list_detectors()}") from None
    try:
        return factory(device=device, **kwargs)
    except TypeError as exc:
        raise FaceDetectorError(f"face detector {name!r}: {exc}") from None

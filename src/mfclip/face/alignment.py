"""Face crops: an enlarged square around a detector box, or a 5-point similarity alignment.

:func:`cut_face` is the one crop both ``mfclip preprocess`` and scoring (``Detector``, ``mfclip predict``,
``mfclip serve``) run, driven by a :class:`~mfclip.inputs.FaceCropConfig`.

The alignment follows the DeepfakeBench convention: the five landmarks are mapped by a least-squares
similarity transform onto the ArcFace 112x112 template scaled to the output size, and the template is
shrunk towards the centre by ``scale`` (1.3) so the crop keeps some context around the face.
"""

from __future__ import annotations

import numpy as np

from mfclip.face.detectors import FaceBox
from mfclip.inputs import FaceCropConfig

#: The ArcFace five-point template for 112x112 crops: left eye, right eye, nose tip, mouth left, mouth right.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def square_box(box: FaceBox, margin: float = 0.3) -> tuple[float, float, float]:
    """``(centre_x, centre_y, side)`` of the square around ``box``: its longer side times ``1 + margin``."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(box.width, box.height) * (1.0 + margin)
    return (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0, side


def crop_face(image: np.ndarray, box: FaceBox, margin: float = 0.3, size: int = 256) -> np.ndarray:
    """Cut the square around ``box`` enlarged by ``margin`` and resize it to ``size`` x ``size``.

    Parts of the square outside the image are filled with black, so the face stays centred.
    """
    import cv2

    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = image.shape[:2]
    cx, cy, side = square_box(box, margin)
    side_px = max(round(side), 1)
    x0 = round(cx - side_px / 2.0)
    y0 = round(cy - side_px / 2.0)
    x1, y1 = x0 + side_px, y0 + side_px
    canvas = np.zeros((side_px, side_px, *image.shape[2:]), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side_px == size:
        return canvas
    interpolation = cv2.INTER_AREA if side_px > size else cv2.INTER_CUBIC
    return cv2.resize(canvas, (size, size), interpolation=interpolation)


def template_landmarks(size: int = 256, scale: float = 1.3) -> np.ndarray:
    """The ArcFace template scaled to ``size`` and shrunk by ``scale`` towards the centre: ``(5, 2)``."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    centre = size / 2.0
    points = ARCFACE_TEMPLATE_112 * (size / 112.0)
    return centre + (points - centre) / scale


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` onto ``target``.

    Umeyama's closed form; returns the ``2x3`` matrix ``M`` with ``target ≈ M @ [x, y, 1]``.
    """
    src = np.asarray(source, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(f"need two matching sets of at least 2 points, got {len(src)} and {len(dst)}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("the source points all coincide; no similarity transform exists")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0  # a reflection is not a similarity of faces: flip the weakest axis instead
    rotation = u @ sign @ vt
    factor = float((singular * np.diag(sign)).sum() / src_var)
    translation = dst_mean - factor * rotation @ src_mean
    return np.hstack([factor * rotation, translation[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: int = 256, scale: float = 1.3) -> np.ndarray:
    """The ``2x3`` warp taking 5-point ``landmarks`` (image pixels) onto :func:`template_landmarks`."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks as a (5, 2) array, got shape {points.shape}")
    return similarity_transform(points, template_landmarks(size, scale))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 256, scale: float = 1.3) -> np.ndarray:
    """Warp ``image`` so the five landmarks land on the (DeepfakeBench-style) ArcFace template.

    Output is ``size`` x ``size``; pixels from outside the image are black.
    """
    import cv2

    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    matrix = alignment_matrix(landmarks, size, scale)
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def usable_faces(faces: list[FaceBox], min_score: float = 0.0) -> list[FaceBox]:
    """The detections worth cropping, in the detector's order (largest first): score >= ``min_score``."""
    return [face for face in faces if face.score >= min_score and face.area > 0]


def cut_face(image: np.ndarray, face: FaceBox, settings: FaceCropConfig) -> np.ndarray:
    """The ``settings.size`` square crop of one detected face, aligned or boxed as ``settings`` say."""
    if settings.align == "deepfakebench":
        if face.landmarks is None:
            raise ValueError(
                f"{settings.align} alignment needs facial landmarks, and the {settings.detector} detection "
                "has none"
            )
        return align_face(image, face.landmarks, size=settings.size, scale=settings.scale)
    return crop_face(image, face, margin=settings.margin, size=settings.size)

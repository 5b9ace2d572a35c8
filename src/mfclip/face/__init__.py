"""Face detection, cropping and alignment, and the preprocess pipeline that turns raw images and videos
into face crops plus a manifest. Knows nothing of models."""

from mfclip.face.alignment import (
    ARCFACE_TEMPLATE_112,
    align_face,
    alignment_matrix,
    crop_face,
    cut_face,
    similarity_transform,
    template_landmarks,
    usable_faces,
)
from mfclip.face.detectors import (
    FaceBox,
    FaceDetector,
    FaceDetectorError,
    get_detector,
    list_detectors,
)
from mfclip.face.pipeline import (
    PreprocessConfig,
    PreprocessError,
    PreprocessResult,
    crop_settings_of,
    preprocess,
    sources_from_manifest,
    sources_from_paths,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FaceBox",
    "FaceDetector",
    "FaceDetectorError",
    "PreprocessConfig",
    "PreprocessError",
    "PreprocessResult",
    "align_face",
    "alignment_matrix",
    "crop_face",
    "crop_settings_of",
    "cut_face",
    "get_detector",
    "list_detectors",
    "preprocess",
    "similarity_transform",
    "sources_from_manifest",
    "sources_from_paths",
    "template_landmarks",
    "usable_faces",
]

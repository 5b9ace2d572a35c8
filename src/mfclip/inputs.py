"""A model's input contract: how a photo becomes the ``(3, S, S)`` tensor the model was trained on.

Every model config carries an :class:`InputConfig` (``model.config.input``) next to its ``image_size``
``S``, so the settings travel inside the checkpoint and every entry point (training and validation data,
``mfclip eval``, :class:`~mfclip.Detector`, ``mfclip serve``, ``mfclip explain``, exports) builds its
preprocessing from them through one builder, :meth:`mfclip.data.transforms.ImageTransform.for_model`.

- ``resize`` and ``interpolation``: how an image (or face crop) is scaled to ``S x S``.
- ``face``: how faces were cut from photos before training (the settings of ``mfclip preprocess``), or
  ``None`` when the training images were used as they are (DiFF, the synthetic benchmark). Scoring a
  photo with face detection on cuts the face with exactly these settings.

This module holds only the typed settings; the transform lives in :mod:`mfclip.data.transforms` and the
face crop in :mod:`mfclip.face`. Checkpoints written before the contract existed load with the defaults
below (bicubic ``shorter_side_center_crop``, no face crop).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mfclip.utils.config import StrictConfig

ResizeMode = Literal["shorter_side_center_crop", "direct"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
FaceDetectorName = Literal["mtcnn", "haar", "none"]
Alignment = Literal["none", "deepfakebench"]

#: Box crops: the square around a detected face is its longer side times ``1 + margin``.
DEFAULT_FACE_MARGIN = 0.3
#: Aligned crops: how far the five-point face template is shrunk towards the centre (DeepfakeBench: 1.3).
DEFAULT_ALIGN_SCALE = 1.3
#: Side of a face crop in pixels, before the model's own resize.
DEFAULT_FACE_SIZE = 256


class FaceCropConfig(StrictConfig):
    """How a face is cut from a photo: ``mfclip preprocess``'s crop settings, resolved.

    ``detector`` finds the face (``none``: the centred square of the image, no detection); the largest
    detection scoring at least ``min_score`` is kept. ``align: deepfakebench`` warps its five landmarks
    onto the ArcFace template shrunk by ``scale`` (mtcnn only: the other detectors give no landmarks);
    ``align: none`` cuts the square around the box enlarged by ``margin``. Either way the crop is
    ``size x size`` pixels.
    """

    detector: FaceDetectorName = "mtcnn"
    #: Extra keyword arguments for the detector (e.g. ``min_face_size`` for mtcnn).
    detector_options: dict[str, Any] = Field(default_factory=dict)
    align: Alignment = "none"
    margin: float = Field(default=DEFAULT_FACE_MARGIN, ge=0)
    scale: float = Field(default=DEFAULT_ALIGN_SCALE, gt=0)
    size: int = Field(default=DEFAULT_FACE_SIZE, ge=8, le=4096)
    #: Detections scoring below this are ignored.
    min_score: float = 0.0

    @model_validator(mode="after")
    def _alignment_has_landmarks(self) -> FaceCropConfig:
        if self.align == "deepfakebench" and self.detector != "mtcnn":
            raise ValueError(
                f"align={self.align!r} needs facial landmarks, which only the mtcnn detector gives "
                f"(detector is {self.detector!r})"
            )
        return self

    def describe(self) -> str:
        """One line, e.g. ``mtcnn, deepfakebench alignment (scale 1.3), 256 px``."""
        if self.align == "deepfakebench":
            how = f"{self.align} alignment (scale {self.scale:g})"
        elif self.detector == "none":
            how = "centred square"
        else:
            how = f"box crop (margin {self.margin:g})"
        return f"{self.detector}, {how}, {self.size} px"


class InputConfig(StrictConfig):
    """How an image becomes a model's ``S x S`` input (``S`` is the model config's ``image_size``).

    ``resize``: ``shorter_side_center_crop`` scales the shorter side to ``S`` and crops the centre;
    ``direct`` scales to ``S x S``, distorting non-square images but keeping all content.
    ``interpolation``: the resampling filter of that resize. ``face``: the face crop the training images
    were cut with (see :class:`FaceCropConfig`), ``None`` when they were used as they are.
    """

    resize: ResizeMode = "shorter_side_center_crop"
    interpolation: Interpolation = "bicubic"
    face: FaceCropConfig | None = None

    def describe(self) -> str:
        """One line for summaries and model cards."""
        face = f"faces: {self.face.describe()}" if self.face is not None else "no face crop"
        return f"{self.resize} ({self.interpolation}), {face}"


def input_contract(model_or_config: Any) -> tuple[int, InputConfig]:
    """``(image_size, input config)`` of a detector model or of its config.

    Raises ``ValueError`` naming the model type when its config declares no ``input`` contract.
    """
    config = getattr(model_or_config, "config", model_or_config)
    size = getattr(config, "image_size", None)
    contract = getattr(config, "input", None)
    if not isinstance(size, int) or not isinstance(contract, InputConfig):
        kind = getattr(config, "type", type(model_or_config).__name__)
        raise ValueError(
            f"model type {kind!r}: its config must declare image_size and an 'input' field "
            "(mfclip.inputs.InputConfig), the input contract every entry point reads"
        )
    return size, contract


__all__ = [
    "DEFAULT_ALIGN_SCALE",
    "DEFAULT_FACE_MARGIN",
    "DEFAULT_FACE_SIZE",
    "Alignment",
    "FaceCropConfig",
    "FaceDetectorName",
    "InputConfig",
    "Interpolation",
    "ResizeMode",
    "input_contract",
]

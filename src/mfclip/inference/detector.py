"""The Python inference API: load a trained detector and score images, videos and tensors.

>>> from mfclip import Detector
>>> detector = Detector.from_pretrained("runs/mfclip/checkpoint")       # doctest: +SKIP
>>> detector.predict("face.png")                                          # doctest: +SKIP
Prediction(p_fake=0.93, label='fake', path='face.png', box=None)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mfclip.data.decode import DEFAULT_MAX_PIXELS
from mfclip.data.transforms import ImageTransform
from mfclip.inference.preprocess import Preprocessor, face_crop_for
from mfclip.models.base import DetectorModel
from mfclip.models.hub import resolve_checkpoint
from mfclip.models.metadata import CheckpointMetadata
from mfclip.schema import class_name
from mfclip.utils.device import resolve_device, resolve_dtype

if TYPE_CHECKING:
    from mfclip.inference.explain import Explanation


@dataclass(frozen=True)
class Prediction:
    """The score of one image: P(fake), its label at the threshold, and where it came from."""

    p_fake: float
    label: str  # "fake" when p_fake >= threshold, else "real"
    path: str | None = None
    box: tuple[int, int, int, int] | None = None  # the face box (x0, y0, x1, y1) when face detection ran

    @property
    def is_fake(self) -> bool:
        return self.label == "fake"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VideoPrediction:
    """The score of a video: mean and maximum P(fake) over its sampled frames."""

    path: str
    p_fake: float  # mean over frames
    p_fake_max: float
    label: str  # from the mean
    frames: int
    frame_scores: tuple[float, ...]

    @property
    def is_fake(self) -> bool:
        return self.label == "fake"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


class Detector:
    """A loaded detector model with its preprocessing, ready to score inputs.

    Build one with :meth:`from_pretrained` (a checkpoint directory or a Hugging Face Hub id) or directly
    from a :class:`~mfclip.models.base.DetectorModel`. Images are prepared by the model's input contract
    (``model.config.input``): ``face_detector="auto"`` (the default) cuts faces the way the training
    images were cut, and does nothing for a model trained on uncropped images; ``"off"`` (or None) never
    crops; ``"mtcnn"`` / ``"haar"`` pick the detector. Thread-safe: model calls are serialised.
    """

    def __init__(
        self,
        model: DetectorModel,
        *,
        metadata: CheckpointMetadata | dict[str, Any] | None = None,
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        face_detector: str | None = "auto",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        batch_size: int = 32,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.metadata = CheckpointMetadata.coerce(metadata)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.batch_size = max(int(batch_size), 1)
        self.preprocessor = Preprocessor(
            ImageTransform.for_model(model),
            face=face_crop_for(model.input_config, face_detector),
            max_pixels=max_pixels,
        )
        self._inference = self.model.inference_module().eval()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        *,
        face_detector: str | None = "auto",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        batch_size: int = 32,
        revision: str | None = None,
    ) -> Detector:
        """Load a checkpoint directory, or one from the Hugging Face Hub (``hf-hub:owner/name[@revision]``).

        Hub checkpoints are resolved through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``; ``revision``
        or ``@revision`` picks a branch, tag or commit) and read by the same loader as local directories.
        Raises :class:`~mfclip.models.checkpoint.CheckpointError` naming the directory when it is missing,
        corrupt or incompatible, and with one line when a Hub id cannot be fetched (for example offline).
        """
        from mfclip.models.checkpoint import load_checkpoint

        directory = resolve_checkpoint(name_or_path, revision=revision)
        model, metadata = load_checkpoint(directory, map_location="cpu")
        return cls(
            model,
            metadata=metadata,
            checkpoint=directory,
            device=device,
            dtype=dtype,
            face_detector=face_detector,
            max_pixels=max_pixels,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------------------------------------
    # Properties

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def face_detector(self) -> str | None:
        return self.preprocessor.face_detector

    # ------------------------------------------------------------------------------------------------
    # Scoring

    def prepare(self, image: Any) -> Any:
        """Face-crop (if enabled) and transform one input into a model-ready ``Prepared`` image."""
        return self.preprocessor(self.preprocessor.to_image(image))

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """P(fake) of preprocessed images (B, 3, S, S) in [0, 1], as a float32 CPU tensor (B,)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, S, S), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            return torch.empty(0)
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        outputs = []
        with self._lock:
            for start in range(0, images.shape[0], self.batch_size):
                chunk = images[start : start + self.batch_size].to(self.device, self.dtype, non_blocking=True)
                outputs.append(self._inference(chunk).float().cpu())
        return torch.cat(outputs)

    def predict(self, inputs: Any, threshold: float = 0.5) -> Prediction | list[Prediction]:
        """Score an image, or a list of them (list in, list out).

        An input is a file path, bytes, a PIL image, an HxWx3 uint8 RGB numpy array, or a (3, H, W) tensor
        (uint8, or float in [0, 1]); a (B, 3, H, W) tensor counts as a list. Images are face-cropped and
        resized by the model's input contract, exactly as in training and evaluation.
        """
        threshold = _check_threshold(threshold)
        single = not isinstance(inputs, (list, tuple)) and not (
            isinstance(inputs, torch.Tensor) and inputs.ndim == 4
        )
        items: Sequence[Any] = [inputs] if single else list(inputs)
        predictions: list[Prediction] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            prepared = [self.prepare(item) for item in chunk]
            scores = self.score(torch.stack([p.tensor for p in prepared])).tolist()
            for item, prep, p_fake in zip(chunk, prepared, scores, strict=True):
                path = str(item) if isinstance(item, (str, Path)) else None
                predictions.append(Prediction(float(p_fake), class_name(p_fake, threshold), path, prep.box))
        return predictions[0] if single else predictions

    def predict_video(self, path: str | Path, frames: int = 16, threshold: float = 0.5) -> VideoPrediction:
        """Score ``frames`` uniformly sampled frames of a video; P(fake) is their mean (max also given)."""
        threshold = _check_threshold(threshold)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        scores = self.score(self.preprocessor.prepare_video(path, frames)).tolist()
        mean = float(np.mean(scores))
        return VideoPrediction(
            path=str(path),
            p_fake=mean,
            p_fake_max=float(max(scores)),
            label=class_name(mean, threshold),
            frames=len(scores),
            frame_scores=tuple(float(s) for s in scores),
        )

    def explain(self, image: Any, threshold: float = 0.5) -> Explanation:
        """A Grad-CAM heat map, the richest patch and its SRM residual, and P(fake) for one image."""
        from mfclip.inference.explain import explain

        with self._lock:
            return explain(self, image, threshold=_check_threshold(threshold))

    # ------------------------------------------------------------------------------------------------
    # Self-description

    def model_card(self) -> dict[str, Any]:
        """What the checkpoint says about itself: name, config, metadata and its model card text."""
        from mfclip.models.checkpoint import CheckpointError, read_checkpoint_config

        config = self.model.config.to_dict() if hasattr(self.model.config, "to_dict") else {}
        header: dict[str, Any] = {}
        card_text = None
        if self.checkpoint is not None and self.checkpoint.is_dir():
            try:
                header = read_checkpoint_config(self.checkpoint)
            except CheckpointError:
                header = {}
            readme = self.checkpoint / "README.md"
            if readme.is_file():
                card_text = readme.read_text(encoding="utf-8")
        return {
            "name": self.metadata.name or config.get("name") or type(self.model).__name__,
            "preset": config.get("name"),
            "architecture": type(self.model).__name__,
            "image_size": self.image_size,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "face_detector": self.face_detector,
            "input": self.model.input_config.to_dict(),
            "checkpoint": str(self.checkpoint) if self.checkpoint is not None else None,
            "format": header.get("format"),
            "format_version": header.get("format_version"),
            "mfclip_version": header.get("mfclip_version"),
            "created_utc": header.get("created_utc"),
            "metadata": self.metadata.to_dict(),
            "config": config,
            "card": card_text,
        }

    def summary(self) -> str:
        """One line describing the model, for command-line output."""
        card = self.model_card()
        parts = [
            f"model {card['name']}"
            + (f" ({card['preset']})" if card["preset"] not in (None, card["name"]) else ""),
            f"{card['image_size']} px",
            f"{card['parameters'] / 1e6:.1f} M params",
        ]
        if card["mfclip_version"]:
            parts.append(f"saved by mfclip {card['mfclip_version']}")
        meta = self.metadata
        if meta.datasets:
            parts.append("trained on " + ", ".join(meta.datasets))
        if meta.protocol is not None:
            variant = f" ({meta.protocol.variant})" if meta.protocol.variant else ""
            parts.append(f"protocol {meta.protocol.name}{variant}")
        if meta.epochs is not None:
            parts.append(f"epochs {meta.epochs}")
        if meta.is_synthetic:
            parts.append("SYNTHETIC training data")
        face = self.preprocessor.face
        parts.append(f"faces: {face.describe()}" if face is not None else "no face crop")
        parts.append(f"on {card['device']}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"Detector({self.summary()})"


__all__ = ["Detector", "Prediction", "VideoPrediction"]

"""Baseline detectors that run in the same harness as MFCLIP (training, evaluation, export, serving).

- ``clip_probe``: a frozen open_clip image tower and a trainable linear head (a CLIP linear probe);
- ``clip_finetune``: the same image tower and head, everything trainable (full fine-tuning);
- ``timm_cnn``: any timm image classifier with a two-class head, e.g. ``legacy_xception`` or
  ``efficientnet_b4``. Built with ``pretrained=False`` (timm never downloads); ``create_model(...,
  backbone_weights=SOURCE)`` or :func:`load_backbone_weights_into` loads pretrained (ImageNet) weights
  from a local file or folder or a ``hf-hub:timm/<name>`` repository, strictly
  (:meth:`TimmCNN.load_backbone_weights`).

Like every detector they take RGB images in ``[0, 1]`` of shape (B, 3, S, S) and normalise internally.
The CLIP baselines expose their tower through ``clip_towers()``, so ``create_model(...,
clip_weights=PATH)`` loads pretrained CLIP weights into them exactly as into MFCLIP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from mfclip.inputs import InputConfig
from mfclip.models.base import DetectorModel, ModelOutput, to_parameter_dtype
from mfclip.models.clip_tower import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATION_STATS,
    BinaryLogit,
    ClipTowerConfig,
    ClipTowerDetector,
    ImageNormalize,
    check_images,
)
from mfclip.models.readers import CheckpointError, read_torch_file, strip_wrapper_prefixes
from mfclip.models.registry import register_model_type
from mfclip.utils.config import ConfigError, StrictConfig

logger = logging.getLogger(__name__)

Normalization = Literal["clip", "imagenet", "inception", "timm", "none"]


# ---------------------------------------------------------------------------------------------------
# CLIP linear probe and full fine-tune
# ---------------------------------------------------------------------------------------------------


class ClipBaselineConfig(ClipTowerConfig):
    """A CLIP image tower (any open_clip ViT config) with a linear two-class head on its embedding.

    ``type: clip_probe`` freezes the tower (only the head trains); ``type: clip_finetune`` trains both.
    ``normalize_features`` L2-normalises the tower's embedding before the head (``feature_scale``
    then multiplies it, since unit vectors give tiny logits). ``binary_logit`` makes the head a single
    fake logit z with logits (0, z), so training minimises binary cross-entropy on z (UnivFD's head);
    ``head_init_std`` is the standard deviation of the head's initial weights (its bias starts at 0).
    """

    type: Literal["clip_probe", "clip_finetune"] = "clip_probe"
    normalize_features: bool = False
    feature_scale: float = Field(default=10.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    binary_logit: bool = False
    head_init_std: float = Field(default=0.01, ge=0.0)

    @property
    def frozen_backbone(self) -> bool:
        return self.type == "clip_probe"


class ClipBaseline(ClipTowerDetector):
    """open_clip ``VisionTransformer`` → (optional L2 norm) → dropout → linear head."""

    config: ClipBaselineConfig

    def __init__(self, config: ClipBaselineConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head: nn.Module = (
            BinaryLogit(config.embed_dim) if config.binary_logit else nn.Linear(config.embed_dim, 2)
        )
        nn.init.normal_(self.head.weight, std=config.head_init_std)
        nn.init.zeros_(self.head.bias)
        if config.frozen_backbone:
            self.visual.requires_grad_(False)
            self.visual.eval()

    def train(self, mode: bool = True) -> ClipBaseline:
        super().train(mode)
        if self.config.frozen_backbone:
            self.visual.eval()  # a probe's features never change, whatever the training mode
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The tower's image embedding (B, embed_dim), unnormalised."""
        return self.visual(self.pixels(images))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_features:
            features = F.normalize(features, dim=-1) * self.config.feature_scale
        return self.head(self.dropout(features))


@register_model_type("clip_probe", ClipBaselineConfig)
def build_clip_probe(config: ClipBaselineConfig) -> ClipBaseline:
    """Builder for ``type: clip_probe`` (frozen CLIP image tower + linear head)."""
    return ClipBaseline(config)


@register_model_type("clip_finetune", ClipBaselineConfig)
def build_clip_finetune(config: ClipBaselineConfig) -> ClipBaseline:
    """Builder for ``type: clip_finetune`` (CLIP image tower + linear head, all trainable)."""
    return ClipBaseline(config)


# ---------------------------------------------------------------------------------------------------
# timm CNN
# ---------------------------------------------------------------------------------------------------


# timm.create_model arguments that read or download weights.
_TIMM_WEIGHT_ARGUMENTS = frozenset(
    {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}
)


class TimmCNNConfig(StrictConfig):
    """A timm classifier (``arch``: any ``timm.list_models()`` name) with a two-class head.

    ``normalize: timm`` uses the mean/std the architecture's pretrained weights expect (Inception
    statistics for Xception, ImageNet for EfficientNet). The network is built with random weights (timm
    never downloads); pretrained ones are loaded from a source given at creation or training time
    (``backbone_weights``), not recorded in this config.
    """

    type: Literal["timm_cnn"] = "timm_cnn"
    name: str | None = None
    description: str = ""
    arch: str = "legacy_xception"
    image_size: int = Field(default=299, gt=0)
    input: InputConfig = Field(default_factory=InputConfig)  # how images become image_size inputs
    normalize: Normalization = "timm"
    drop_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)  # extra timm arguments

    @field_validator("kwargs")
    @classmethod
    def _no_weight_loading(
        cls, value: dict[str, int | float | str | bool]
    ) -> dict[str, int | float | str | bool]:
        # A checkpoint's config.json must not make timm read or download weights on its own loaders.
        loading = sorted(set(value) & _TIMM_WEIGHT_ARGUMENTS)
        if loading:
            raise ValueError(
                f"{', '.join(loading)}: timm arguments that load weights are not accepted (the model is "
                "built with pretrained=False; load weights with TimmCNN.load_backbone_weights)"
            )
        return value


def _timm_stats(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import timm

    config = timm.get_pretrained_cfg(arch)
    mean = getattr(config, "mean", None) if config is not None else None
    std = getattr(config, "std", None) if config is not None else None
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(mean), tuple(std)


class TimmCNN(DetectorModel):
    """A timm image classifier with two outputs (real, fake); :meth:`load_backbone_weights` fills it with
    pretrained weights."""

    config: TimmCNNConfig

    def __init__(self, config: TimmCNNConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        if not timm.is_model(config.arch):
            from mfclip.utils.config import closest

            hint = closest(config.arch, timm.list_models())
            suggestion = f"; did you mean {hint!r}?" if hint else ""
            raise ConfigError(f"arch: unknown timm model {config.arch!r}{suggestion}")
        self.network = timm.create_model(
            config.arch,
            pretrained=False,
            num_classes=2,
            drop_rate=config.drop_rate,
            **config.kwargs,
        )
        if config.normalize == "none":
            mean, std = None, None
        elif config.normalize == "timm":
            mean, std = _timm_stats(config.arch)
        else:
            mean, std = NORMALIZATION_STATS[config.normalize]
        self.normalize = ImageNormalize(mean, std)
        # (mean, std) of the input normalisation, or None without one
        self.input_stats = (tuple(mean), tuple(std)) if mean is not None and std is not None else None

    def forward(
        self,
        images: torch.Tensor,
        prompt_tokens: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        check_images(images, self.image_size)
        network = self.network
        inputs = to_parameter_dtype(network, self.normalize(images))
        features = network.forward_head(network.forward_features(inputs), pre_logits=True)
        return ModelOutput(logits=network.get_classifier()(features), image_features=features)

    def classifier_keys(self) -> list[str]:
        """State-dict keys of the network's classifier (the two-class head), e.g. ``fc.weight``."""
        head = self.network.get_classifier()
        name = next(n for n, module in self.network.named_modules() if module is head)
        return [f"{name}.{key}" if name else key for key in head.state_dict()]

    def load_backbone_weights(self, source: str | Path) -> BackboneWeightsReport:
        """Load pretrained timm weights (e.g. ImageNet) into the network, strictly.

        ``source``: a ``.safetensors`` file, a pickled state dict (``.pth``/``.pt``/``.bin``, also a timm
        training checkpoint with the weights under ``state_dict``), a folder holding ``model.safetensors``
        or ``pytorch_model.bin`` (a downloaded timm Hub repository, its ``config.json`` optional), or
        ``hf-hub:timm/<name>[@revision]`` (through the Hugging Face cache; offline, only the cache).
        Every tensor of the network must come from the file, with its shape, and the file must hold no
        other tensor. The one exception is the classifier: a classifier of another size (ImageNet's
        1000 classes) is left out and the model keeps its own freshly initialised two-class head. A file
        whose ``config.json`` names another timm architecture is refused. Nothing is loaded when an
        error is raised. Afterwards the network (the head excepted) trains in the ``pretrained``
        parameter group.
        """
        from mfclip.models.checkpoint import load_state_dict_into

        weights = read_timm_weights(source)
        where = str(source)
        if weights.architecture is not None and weights.architecture != self.config.arch:
            raise CheckpointError(
                f"{where}: weights of timm model {weights.architecture!r}, but this model is "
                f"{self.config.arch!r} (arch); load weights of the same architecture"
            )
        own = self.network.state_dict()
        state = dict(weights.state)
        from_file = len(set(own) & set(state))
        head_left_out = []
        for key in self.classifier_keys():
            if key in state and tuple(state[key].shape) != tuple(own[key].shape):
                head_left_out.append(f"{key} {tuple(state[key].shape)}")
                del state[key]
                from_file -= 1
            state.setdefault(key, own[key])  # the model's own (freshly initialised) two-class head
        for key, value in own.items():  # a counter, not a weight; older files do not carry it
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, value)
        load_state_dict_into(self.network, state, strict=True, source=where)
        self.mark_pretrained()
        report = BackboneWeightsReport(
            source=where,
            file=str(weights.file),
            architecture=self.config.arch,
            loaded=from_file,
            head_left_out=head_left_out,
        )
        file_stats, model_stats = weights.normalization, self.input_stats
        if file_stats is not None and model_stats is not None and not _same_stats(file_stats, model_stats):
            report.warnings.append(
                f"the weights were trained on inputs normalised with mean/std {file_stats}, the model "
                f"normalises with {model_stats} (normalize: {self.config.normalize})"
            )
        return report

    def mark_pretrained(self, towers: Iterable[str] | None = None) -> None:
        """Record that the network (``"backbone"``, its classifier excepted) holds pretrained weights."""
        names = {BACKBONE} if towers is None else set(towers)
        unknown = names - {BACKBONE}
        if unknown:
            raise ValueError(f"TimmCNN has no part {sorted(unknown)[0]!r}; it has [{BACKBONE!r}]")
        self.pretrained_towers |= names

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``pretrained``: the network without its classifier, once pretrained weights were loaded into it
        (:attr:`pretrained_towers` holds ``"backbone"``); ``new``: the rest."""
        head = {id(p) for p in self.network.get_classifier().parameters()}
        loaded = BACKBONE in self.pretrained_towers
        groups: dict[str, list[nn.Parameter]] = {"pretrained": [], "new": []}
        for param in self.parameters():
            if param.requires_grad:
                groups["pretrained" if loaded and id(param) not in head else "new"].append(param)
        return groups

    def explain_target_layers(self) -> list[nn.Module]:
        info = getattr(self.network, "feature_info", None)
        if info:
            last = info[-1] if isinstance(info, list) else info.info[-1]
            name = last.get("module") if isinstance(last, dict) else None
            if name:
                return [self.network.get_submodule(name)]
        raise NotImplementedError(f"no Grad-CAM target layer known for timm model {self.config.arch!r}")


@register_model_type("timm_cnn", TimmCNNConfig)
def build_timm_cnn(config: TimmCNNConfig) -> TimmCNN:
    """Builder for ``type: timm_cnn``."""
    return TimmCNN(config)


# ---------------------------------------------------------------------------------------------------
# Pretrained timm weights
# ---------------------------------------------------------------------------------------------------

BACKBONE = "backbone"  # the name a TimmCNN's pretrained network goes by in ``pretrained_towers``


@dataclass
class TimmWeights:
    """A timm state dict read from ``file``, with what the repository's ``config.json`` says, if any."""

    state: dict[str, torch.Tensor]
    file: Path
    architecture: str | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass
class BackboneWeightsReport:
    """What :meth:`TimmCNN.load_backbone_weights` loaded: ``loaded`` tensors of the network (the head
    excepted) from ``file``; ``head_left_out``: the file's classifier tensors of another size."""

    source: str
    file: str
    architecture: str
    loaded: int
    head_left_out: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source}: loaded {self.loaded} tensors into timm {self.architecture}"
        if self.head_left_out:
            text += f"; its classifier ({', '.join(self.head_left_out)}) left out for the two-class head"
        return text + "".join(f"\n  warning: {w}" for w in self.warnings)

    def __str__(self) -> str:
        return self.summary()


def read_timm_weights(source: str | Path) -> TimmWeights:
    """The timm state dict ``source`` holds (see :meth:`TimmCNN.load_backbone_weights` for the sources).

    Files are read by :func:`~mfclip.models.readers.read_torch_file` (safetensors, or ``torch.load`` with
    ``weights_only=True``); ``module.`` and ``_orig_mod.`` prefixes are removed.
    """
    from mfclip.models import hub

    text = str(source)
    if hub.is_hub_id(text):
        folder = hub.fetch_timm_weights(hub.parse_hub_id(text))
    else:
        folder = Path(source).expanduser()
        if not folder.exists():
            raise CheckpointError(
                f"{text}: no such file or folder (a timm Hub repository is written hf-hub:timm/NAME)"
            )
    if folder.is_dir():
        names = hub.TIMM_WEIGHT_FILES
        file = next((folder / name for name in names if (folder / name).is_file()), None)
        if file is None:
            raise CheckpointError(f"{text}: the folder holds no {' or '.join(names)}")
        architecture, normalization = _timm_config(folder / "config.json")
    else:
        file, architecture, normalization = folder, None, None
    payload: Any = read_torch_file(file)
    if isinstance(payload, Mapping):
        for container in ("state_dict", "model"):
            if isinstance(payload.get(container), Mapping):
                payload = payload[container]
                break
    if not isinstance(payload, Mapping) or not payload:
        raise CheckpointError(f"{file}: expected a state dict of tensors, found {type(payload).__name__}")
    others = sorted(str(k) for k, v in payload.items() if not isinstance(v, torch.Tensor))
    if others:
        raise CheckpointError(f"{file}: entries that are not tensors: {', '.join(others[:5])}")
    state = {strip_wrapper_prefixes(str(k)): v for k, v in payload.items()}
    return TimmWeights(state=state, file=file, architecture=architecture, normalization=normalization)


def load_backbone_weights_into(model: Any, source: str | Path) -> BackboneWeightsReport:
    """Load pretrained timm weights into a ``timm_cnn`` model (:meth:`TimmCNN.load_backbone_weights`)."""
    if not isinstance(model, TimmCNN):
        kind = getattr(getattr(model, "config", None), "type", type(model).__name__)
        raise ConfigError(
            f"backbone_weights: only timm_cnn models take timm weights, this model is {kind!r} "
            "(CLIP towers load clip_weights)"
        )
    report = model.load_backbone_weights(source)
    logger.info("%s", report.summary())
    return report


def _timm_config(path: Path) -> tuple[str | None, tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """The architecture and input mean/std a timm repository's config.json records (None when absent)."""
    if not path.is_file():
        return None, None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    architecture = document.get("architecture")
    cfg = document.get("pretrained_cfg")
    mean, std = (cfg.get("mean"), cfg.get("std")) if isinstance(cfg, dict) else (None, None)
    stats = (tuple(map(float, mean)), tuple(map(float, std))) if mean and std else None
    return (str(architecture) if architecture else None), stats


def _same_stats(a: tuple[tuple[float, ...], ...], b: tuple[tuple[float, ...], ...]) -> bool:
    return all(abs(x - y) < 1e-4 for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True))

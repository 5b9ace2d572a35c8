"""The interface every detector model implements (MFCLIP and the baselines alike).

Images are float tensors in [0, 1], RGB, shape (B, 3, S, S) with S = ``model.image_size``; each model
normalises them itself, so data loaders, the Detector, the server and exported graphs feed the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from mfclip.inputs import InputConfig, input_contract
from mfclip.utils.config import StrictConfig

# gather(t) returns t concatenated over all ranks, keeping gradients for the local slice.
GatherFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ModelOutput:
    """What a forward pass returns. Only ``logits`` is always present."""

    logits: torch.Tensor  # (B, 2): real, fake
    image_features: torch.Tensor | None = None  # fused visual feature v (unnormalised)
    text_features: torch.Tensor | None = None  # fused text feature t (unnormalised), training only
    text_prediction: torch.Tensor | None = None  # predictor(v̂), training only
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def p_fake(self) -> torch.Tensor:
        return self.logits.float().softmax(dim=-1)[:, 1]


class DetectorModel(nn.Module):
    """Base class of all detectors. Subclasses set ``self.config`` and implement ``forward``.

    ``pretrained_towers`` names the CLIP towers (keys of :meth:`clip_towers`) that hold pretrained
    weights: the weight loaders and the checkpoint loader record them (:meth:`mark_pretrained`), and
    :meth:`parameter_groups` puts only those towers in the ``pretrained`` group.
    """

    config: StrictConfig

    def __init__(self) -> None:
        super().__init__()
        self.pretrained_towers: set[str] = set()

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)  # type: ignore[attr-defined]

    @property
    def input_config(self) -> InputConfig:
        """The input contract (resize, interpolation, face crop) the model was trained with."""
        return input_contract(self)[1]

    def forward(
        self,
        images: torch.Tensor,
        prompt_tokens: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        raise NotImplementedError

    def compute_loss(
        self, output: ModelOutput, labels: torch.Tensor, gather: GatherFn | None = None
    ) -> dict[str, torch.Tensor]:
        """Losses of one step; ``loss`` is the total. The default is cross-entropy on ``logits``."""
        loss = nn.functional.cross_entropy(output.logits.float(), labels)
        return {"loss": loss, "ce": loss.detach()}

    def uses_text(self) -> bool:
        """Whether training batches need ``prompt_tokens`` (only MFCLIP's text tower does)."""
        return False

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """P(fake) per image, shape (B,). Never runs a text tower."""
        return self.inference_module()(images)

    def inference_module(self) -> nn.Module:
        """A module mapping images (B, 3, S, S) in [0, 1] to P(fake) (B,): what export and serving run."""
        return _ProbabilityHead(self)

    def clip_towers(self) -> dict[str, nn.Module | None]:
        """The open_clip towers this model holds, for loading pretrained CLIP weights.

        Keys ``visual`` (an ``open_clip`` VisionTransformer) and ``text`` (an ``open_clip`` TextTransformer);
        a value is None when the model has no such tower.
        """
        return {"visual": None, "text": None}

    def on_clip_weights_loaded(self) -> None:
        """Called after pretrained CLIP weights were loaded into ``clip_towers()``.

        A model whose own parameters are derived from its towers' weights (Effort's SVD split of the
        attention weights) recomputes them here; the default does nothing.
        """

    def explain_target_layers(self) -> list[nn.Module]:
        """Layers whose activations Grad-CAM uses for the image branch."""
        raise NotImplementedError(f"{type(self).__name__} does not define Grad-CAM target layers")

    def explain_reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Turns a target layer's activation into (B, C, H, W) for Grad-CAM, or None if already so."""
        return None

    def mark_pretrained(self, towers: Iterable[str] | None = None) -> None:
        """Record that ``towers`` (names of :meth:`clip_towers`; None: every tower the model has) now hold
        pretrained weights."""
        present = {name for name, tower in self.clip_towers().items() if tower is not None}
        names = present if towers is None else set(towers)
        unknown = names - present
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no CLIP tower {sorted(unknown)[0]!r}; it has {sorted(present)}"
            )
        self.pretrained_towers |= names

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split for separate learning rates.

        ``pretrained``: the CLIP towers that received pretrained weights (:attr:`pretrained_towers`);
        ``new``: everything else, randomly initialised towers included.
        """
        pretrained_ids: set[int] = set()
        for name, tower in self.clip_towers().items():
            if tower is not None and name in self.pretrained_towers:
                pretrained_ids.update(id(p) for p in tower.parameters())
        groups: dict[str, list[nn.Parameter]] = {"pretrained": [], "new": []}
        for param in self.parameters():
            if param.requires_grad:
                groups["pretrained" if id(param) in pretrained_ids else "new"].append(param)
        return groups

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters trained without weight decay (open_clip's rule).

        Every parameter with fewer than two dimensions (biases, normalisation gains, class embeddings,
        the logit scale, level weights) and every parameter of a normalisation layer.
        """
        exempt = {name for name, param in self.named_parameters() if param.ndim < 2}
        for module_name, module in self.named_modules():
            if isinstance(module, _NORM_LAYERS):
                prefix = f"{module_name}." if module_name else ""
                exempt.update(prefix + name for name, _ in module.named_parameters(recurse=False))
        return exempt


_NORM_LAYERS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


def to_parameter_dtype(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` in the floating dtype of ``module``'s parameters (unchanged when it has none).

    Models take float32 pixels whatever their own dtype; each branch casts what it feeds its layers.
    Under autocast the parameters stay float32, so this is a no-op and autocast picks the compute dtype.
    """
    for param in module.parameters():
        if param.is_floating_point():
            return inputs.to(param.dtype)
    return inputs


class _ProbabilityHead(nn.Module):
    def __init__(self, model: DetectorModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).p_fake

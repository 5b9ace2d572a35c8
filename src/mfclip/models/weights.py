"""Pretrained CLIP weights: read OpenAI, open_clip and Hugging Face checkpoints and load them into towers.

Every supported source is converted to one key layout, that of open_clip's ``CLIP`` module (which is
also OpenAI's): ``visual.*`` for the image tower and ``token_embedding.weight``, ``positional_embedding``,
``transformer.*``, ``ln_final.*``, ``text_projection`` for the text tower, plus ``logit_scale``.

Sources:

- an OpenAI CLIP file: a TorchScript archive (``ViT-B-16.pt``) or a plain pickled state dict;
- an open_clip checkpoint: a ``.pt/.pth/.bin`` state dict (also a training checkpoint with the weights
  under ``state_dict`` and ``module.`` prefixes), a ``.safetensors`` file, or a folder holding
  ``open_clip_config.json`` and ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``
  (``local-dir:`` prefix accepted);
- a Hugging Face ``CLIPModel`` folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``);
- a Hub repository, spelled ``hf-hub:owner/name[@revision]`` (a plain ``owner/name`` is a local path), or
  an open_clip pretrained tag ``MODEL/TAG`` such as ``ViT-B-16/openai`` (an entry of open_clip's own
  table of releases). Downloads go through ``huggingface_hub`` (:mod:`mfclip.models.hub`) and open_clip;
  with ``HF_HUB_OFFLINE=1`` only the local hub cache is consulted. The downloaded folder is read like a
  local one.

Nothing stored in a file runs while it is read (see :mod:`mfclip.models.readers`): pickled files go through
``torch.load(weights_only=True)``, TorchScript archives through mfclip's own restricted unpickler.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mfclip.models import hub
from mfclip.models.readers import (
    CheckpointError,
    is_torchscript_archive,
    read_torch_file,
    read_torchscript_state_dict,
    strip_wrapper_prefixes,
)

__all__ = [
    "ClipLoadReport",
    "ClipWeights",
    "describe_clip_weights",
    "load_clip_state_dict",
    "load_clip_weights_into",
    "read_clip_weights",
]

# Keys of the open_clip / OpenAI layout that belong to the text tower (top level of ``CLIP``).
TEXT_KEY_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
# Keys that are not weights of either tower.
_NON_TOWER_KEYS = frozenset({"logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size"})
# Buffers that some checkpoints carry but that every tower rebuilds itself.
_REBUILT_BUFFERS = frozenset({"attn_mask"})

_OPEN_CLIP_WEIGHT_FILES = hub.OPEN_CLIP_WEIGHT_FILES
_HF_WEIGHT_FILES = hub.HF_WEIGHT_FILES
_HF_INDEX_FILES = hub.HF_INDEX_FILES

_QUICK_GELU_HINT = (
    "OpenAI and Hugging Face CLIP weights were trained with QuickGELU: build the towers with "
    "quick_gelu enabled (open_clip's '-quickgelu' architectures do this); with plain GELU the features "
    "of pretrained weights are wrong"
)


@dataclass
class ClipWeights:
    """A CLIP state dict in open_clip key layout, plus what the source says about its architecture.

    ``quick_gelu`` and the head counts are None when the source does not record them (a bare state dict).
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    source_format: str
    quick_gelu: bool | None = None
    vision_heads: int | None = None
    text_heads: int | None = None

    def describe(self) -> str:
        """One line per tower describing the architecture these weights fit."""
        return describe_clip_weights(self)


@dataclass
class ClipLoadReport:
    """What :func:`load_clip_weights_into` did."""

    source: str
    source_format: str
    loaded: dict[str, int] = field(default_factory=dict)  # tower name -> tensors loaded
    skipped: list[str] = field(default_factory=list)  # checkpoint keys not loaded anywhere
    missing: dict[str, list[str]] = field(default_factory=dict)  # tower keys left as initialised
    adapted: list[str] = field(default_factory=list)  # tensors resized or transposed to fit
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # expected omissions, e.g. text weights not used

    def summary(self) -> str:
        towers = ", ".join(f"{name} ({count} tensors)" for name, count in self.loaded.items()) or "nothing"
        lines = [f"loaded CLIP weights from {self.source} [{self.source_format}] into {towers}"]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} checkpoint tensors: {_preview(self.skipped)}")
        for tower, keys in self.missing.items():
            lines.append(f"  {tower}: {len(keys)} tensors kept their initial values: {_preview(keys)}")
        lines.extend(f"  adapted {item}" for item in self.adapted)
        lines.extend(f"  note: {item}" for item in self.notes)
        lines.extend(f"  warning: {item}" for item in self.warnings)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------------------------------------------
# Reading sources
# ---------------------------------------------------------------------------------------------------


def load_clip_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read CLIP weights from any supported source as a state dict in open_clip ``CLIP`` key layout."""
    return read_clip_weights(source).state_dict


def read_clip_weights(source: str | Path | Mapping[str, torch.Tensor] | ClipWeights) -> ClipWeights:
    """Read CLIP weights and what the source records about their architecture (activation, heads)."""
    if isinstance(source, ClipWeights):
        return source
    if isinstance(source, Mapping):
        return _from_state_dict(dict(source), "<state dict>", "state-dict")
    text = str(source)
    if text.startswith("local-dir:"):
        text = text[len("local-dir:") :]
        if not text:
            raise CheckpointError("empty path after 'local-dir:'")
    path = Path(text).expanduser()
    if path.is_dir():
        return _read_directory(path)
    if path.is_file():
        return _read_file(path)
    if hub.is_hub_id(text):
        return _read_from_hub(text)
    model_name, _, tag = text.partition("/")
    if _is_open_clip_tag(model_name, tag):
        return _read_open_clip_tag(model_name, tag)
    raise hub.missing_path_error(text, "CLIP weights not found")


def _read_directory(path: Path) -> ClipWeights:
    if (path / "open_clip_config.json").is_file():
        return _read_open_clip_dir(path)
    if (path / "config.json").is_file():
        return _read_hf_dir(path)
    raise CheckpointError(
        f"{path}: not a CLIP weights folder: expected open_clip_config.json (open_clip) or config.json "
        "(Hugging Face CLIPModel); pass the weights file itself otherwise"
    )


def _read_file(path: Path) -> ClipWeights:
    if path.suffix == ".npz":
        raise CheckpointError(
            f"{path}: big_vision .npz weights are not supported; convert them with open_clip"
        )
    if is_torchscript_archive(path):
        # Read from the zip by mfclip's restricted unpickler: the archive's code is never run.
        weights = _from_state_dict(read_torchscript_state_dict(path), str(path), "openai-torchscript")
        # OpenAI's released archives are all QuickGELU models with 64-dimensional heads.
        weights.quick_gelu = True
        weights.vision_heads, weights.text_heads = _openai_heads(weights.state_dict)
        return weights
    state = read_torch_file(path)
    fmt = "safetensors" if path.suffix == ".safetensors" else "state-dict"
    return _from_state_dict(_unwrap_state_dict(state, path), str(path), fmt)


def _read_open_clip_dir(path: Path) -> ClipWeights:
    config = _read_json(path / "open_clip_config.json")
    model_cfg = config.get("model_cfg", config)
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{path / 'open_clip_config.json'}: 'model_cfg' is not a mapping")
    weights_file = next((path / n for n in _OPEN_CLIP_WEIGHT_FILES if (path / n).is_file()), None)
    if weights_file is None:
        raise CheckpointError(
            f"{path}: open_clip folder without weights: expected one of {', '.join(_OPEN_CLIP_WEIGHT_FILES)}"
        )
    vision_cfg = model_cfg.get("vision_cfg") or {}
    text_cfg = model_cfg.get("text_cfg") or {}
    for tower_cfg, key in ((vision_cfg, "timm_model_name"), (text_cfg, "hf_model_name")):
        if tower_cfg.get(key):
            raise CheckpointError(
                f"{path}: this open_clip model uses a {key.split('_')[0]} tower ({tower_cfg[key]}); "
                "only open_clip "
                "ViT image towers and CLIP text transformers can be loaded"
            )
    weights = _from_state_dict(
        _unwrap_state_dict(read_torch_file(weights_file), weights_file), str(path), "open_clip-dir"
    )
    weights.quick_gelu = bool(model_cfg.get("quick_gelu", False))
    if isinstance(vision_cfg.get("layers", 12), int):
        weights.vision_heads = int(vision_cfg.get("width", 768)) // int(vision_cfg.get("head_width", 64))
    weights.text_heads = int(text_cfg.get("heads", 8))
    return weights


def _read_hf_dir(path: Path) -> ClipWeights:
    config = _read_json(path / "config.json")
    model_type = config.get("model_type")
    if model_type not in ("clip", "clip_vision_model", "clip_text_model"):
        raise CheckpointError(
            f"{path / 'config.json'}: model_type {model_type!r} is not a Hugging Face CLIP model "
            "(expected 'clip', 'clip_vision_model' or 'clip_text_model')"
        )
    state = _read_hf_weights(path)
    vision_cfg = config.get("vision_config") or (config if model_type == "clip_vision_model" else {})
    text_cfg = config.get("text_config") or (config if model_type == "clip_text_model" else {})
    weights = ClipWeights(_convert_hf_state_dict(state, path), str(path), "huggingface-dir")
    acts = {cfg.get("hidden_act", "quick_gelu") for cfg in (vision_cfg, text_cfg) if cfg}
    if acts == {"quick_gelu"}:
        weights.quick_gelu = True
    elif acts == {"gelu"}:
        weights.quick_gelu = False
    weights.vision_heads = vision_cfg.get("num_attention_heads") if vision_cfg else None
    weights.text_heads = text_cfg.get("num_attention_heads") if text_cfg else None
    return weights


def _read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in _HF_WEIGHT_FILES:
        if (path / name).is_file():
            return _unwrap_state_dict(read_torch_file(path / name), path / name)
    for name in _HF_INDEX_FILES:
        index_path = path / name
        if index_path.is_file():
            state: dict[str, torch.Tensor] = {}
            for shard in hub.shard_names(index_path):
                if not (path / shard).is_file():
                    raise CheckpointError(f"{index_path}: shard {shard} is missing from {path}")
                state.update(read_torch_file(path / shard))
            return state
    raise CheckpointError(
        f"{path}: Hugging Face folder without weights: "
        f"expected {' or '.join(_HF_WEIGHT_FILES + _HF_INDEX_FILES)}"
    )


def _from_state_dict(state: dict[str, Any], source: str, fmt: str) -> ClipWeights:
    state = _unwrap_state_dict(state, source)
    if any(k.startswith(("vision_model.", "text_model.")) for k in state):
        return ClipWeights(_convert_hf_state_dict(state, source), source, "huggingface-state-dict")
    if any(k.startswith("visual.trunk.") for k in state):
        raise CheckpointError(
            f"{source}: a timm image tower (visual.trunk.*) cannot be loaded into a CLIP ViT tower"
        )
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("text.") and key[5:].startswith(TEXT_KEY_PREFIXES):
            key = key[5:]  # open_clip CustomTextCLIP layout keeps the text tower under ``text.``
        if key in _NON_TOWER_KEYS - {"logit_scale", "logit_bias"} or key.endswith(".position_ids"):
            continue
        converted[key] = value
    if not any(k.startswith("visual.") or k.startswith(TEXT_KEY_PREFIXES) for k in converted):
        raise CheckpointError(
            f"{source}: no CLIP weights found (expected keys such as visual.conv1.weight or "
            f"token_embedding.weight; found {_preview(sorted(converted))})"
        )
    return ClipWeights(converted, source, fmt)


def _unwrap_state_dict(state: Any, source: Any) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a (training) checkpoint, with ``module.``/``_orig_mod.`` prefixes removed."""
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = state.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                state = inner
                break
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, found {type(state).__name__}")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors")
    return {strip_wrapper_prefixes(k): v for k, v in tensors.items()}


def _convert_hf_state_dict(state: Mapping[str, torch.Tensor], source: Any) -> dict[str, torch.Tensor]:
    """Map transformers ``CLIPModel`` keys onto open_clip ``CLIP`` keys (qkv fused, projections transposed)"""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    simple = {
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "logit_scale": "logit_scale",
    }
    block_parts = {
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    block = re.compile(r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in simple:
            out[simple[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif match := block.match(key):
            tower, layer, part, kind = match.groups()
            prefix = f"{'visual.' if tower == 'vision_model' else ''}transformer.resblocks.{layer}."
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((prefix, kind), {})[part[10]] = value
            elif part in block_parts:
                out[f"{prefix}{block_parts[part]}.{kind}"] = value
            else:
                out[key] = value  # unknown: reported later as an unexpected key
        else:
            out[key] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(
                f"{source}: {prefix}: attention has {sorted(parts)} projections, need q, k and v"
            )
        out[f"{prefix}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _read_from_hub(name: str) -> ClipWeights:
    """Resolve ``hf-hub:owner/name[@revision]`` through the Hugging Face cache or the network, then read
    the downloaded folder like a local one."""
    hub_id = hub.parse_hub_id(name)
    try:
        folder = hub.fetch_clip_weights(hub_id)
    except CheckpointError as exc:
        if hub.hub_offline():
            raise CheckpointError(_unavailable_message(name, True, None)) from None
        raise CheckpointError(f"{exc}. {_LOCAL_SOURCES}") from None
    weights = _read_directory(folder)
    weights.source = name
    return weights


def _read_open_clip_tag(model_name: str, tag: str) -> ClipWeights:
    from open_clip import get_model_config
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    name = f"{model_name}/{tag}"
    cfg = get_pretrained_cfg(model_name, tag)
    offline = hub.hub_offline()
    if offline and not cfg.get("hf_hub"):
        raise CheckpointError(_unavailable_message(name, offline, None))
    try:
        target = download_pretrained(cfg)
    except Exception as exc:
        raise CheckpointError(_unavailable_message(name, offline, exc)) from None
    if not target:
        raise CheckpointError(_unavailable_message(name, offline, None))
    weights = _read_file(Path(target))
    weights.source, weights.source_format = name, "open_clip-pretrained"
    weights.quick_gelu = bool(cfg.get("quick_gelu", False)) or model_name.endswith("-quickgelu")
    model_cfg = get_model_config(model_name) or {}
    vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if isinstance(vision_cfg.get("layers", 12), int) and not vision_cfg.get("timm_model_name"):
        weights.vision_heads = int(vision_cfg.get("width", 768)) // int(vision_cfg.get("head_width", 64))
    if not text_cfg.get("hf_model_name"):
        weights.text_heads = int(text_cfg.get("heads", 8))
    return weights


def _is_open_clip_tag(model_name: str, tag: str) -> bool:
    if not tag:
        return False
    try:
        from open_clip.pretrained import is_pretrained_cfg
    except ImportError:  # pragma: no cover
        return False
    return bool(is_pretrained_cfg(model_name, tag))


_LOCAL_FORMATS = "OpenAI .pt, open_clip .pt/.safetensors/folder, or a Hugging Face CLIP folder"
_LOCAL_SOURCES = f"Pass a local file or folder instead ({_LOCAL_FORMATS})"


def _unavailable_message(name: str, offline: bool, exc: Exception | None) -> str:
    if offline:
        return (
            f"{name}: pretrained CLIP weights are not available offline "
            "(HF_HUB_OFFLINE=1 and they are not in the local hub cache); download them on a machine with "
            f"network access and pass the local file or folder ({_LOCAL_FORMATS})"
        )
    reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return f"{name}: could not download the pretrained CLIP weights{reason}. {_LOCAL_SOURCES}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _openai_heads(state: Mapping[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """OpenAI's released CLIP towers all use 64-dimensional attention heads."""

    def heads(tensor: torch.Tensor | None) -> int | None:
        if tensor is None or tensor.shape[0] < 64 or tensor.shape[0] % 64:
            return None
        return tensor.shape[0] // 64

    return heads(state.get("visual.conv1.weight")), heads(state.get("ln_final.weight"))


# ---------------------------------------------------------------------------------------------------
# Describing architectures (for error messages and users)
# ---------------------------------------------------------------------------------------------------


def describe_clip_weights(source: str | Path | Mapping[str, torch.Tensor] | ClipWeights) -> str:
    """A readable description of the CLIP architecture a checkpoint fits, e.g. for choosing a model config."""
    weights = read_clip_weights(source)
    lines = [f"{weights.source} [{weights.source_format}]"]
    vision = _describe_vision(_tower_part(weights.state_dict, "visual"))
    text = _describe_text(_tower_part(weights.state_dict, "text"))
    lines.append(f"  image tower: {vision or 'none'}")
    lines.append(f"  text tower: {text or 'none'}")
    act = {True: "QuickGELU", False: "GELU", None: "not recorded"}[weights.quick_gelu]
    lines.append(f"  activation: {act}")
    arch = _matching_open_clip_architectures(weights.state_dict)
    if arch:
        lines.append(f"  matching open_clip architectures: {', '.join(arch)}")
    return "\n".join(lines)


def _layer_count(state: Mapping[str, torch.Tensor], prefix: str = "transformer.resblocks.") -> int:
    layers = {k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)}
    return len(layers)


def _describe_vision(state: Mapping[str, torch.Tensor]) -> str | None:
    if "attnpool.positional_embedding" in state:
        return "a ResNet (OpenAI RN50-style), which cannot be loaded into a ViT tower"
    conv = state.get("conv1.weight")
    if conv is None:
        return None
    width, patch = conv.shape[0], conv.shape[-1]
    text = f"ViT width {width}, {_layer_count(state)} layers, patch {patch}"
    pos = state.get("positional_embedding")
    if pos is not None:
        grid = math.isqrt(max(pos.shape[0] - 1, 0))
        if grid * grid == pos.shape[0] - 1:
            text += f", {grid * patch} px"
    proj = state.get("proj")
    if proj is not None and proj.ndim == 2:
        text += f", embed dim {proj.shape[1]}"
    return text


def _describe_text(state: Mapping[str, torch.Tensor]) -> str | None:
    emb = state.get("token_embedding.weight")
    if emb is None:
        return None
    text = f"width {emb.shape[1]}, {_layer_count(state)} layers, vocabulary {emb.shape[0]}"
    pos = state.get("positional_embedding")
    if pos is not None:
        text += f", context {pos.shape[0]}"
    proj = state.get("text_projection")
    if proj is None:
        proj = state.get("text_projection.weight")
        proj = proj.t() if proj is not None else None
    if proj is not None and proj.ndim == 2:
        text += f", embed dim {proj.shape[1]}"
    return text


def _matching_open_clip_architectures(state: Mapping[str, torch.Tensor]) -> list[str]:
    """open_clip architecture names whose towers have the same width, depth and patch size."""
    vision = _tower_part(state, "visual")
    text = _tower_part(state, "text")
    conv = vision.get("conv1.weight")
    emb = text.get("token_embedding.weight")
    try:
        import open_clip
    except ImportError:  # pragma: no cover
        return []
    names = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        vcfg, tcfg = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if (
            vcfg.get("timm_model_name")
            or tcfg.get("hf_model_name")
            or not isinstance(vcfg.get("layers"), int)
            or "multimodal_cfg" in cfg  # CoCa
            or vcfg.get("attentional_pool")
            or tcfg.get("embed_cls")
        ):
            continue
        if conv is not None and (
            vcfg.get("width") != conv.shape[0]
            or vcfg.get("patch_size") != conv.shape[-1]
            or vcfg.get("layers") != _layer_count(vision)
        ):
            continue
        if emb is not None and (
            tcfg.get("width", 512) != emb.shape[1] or tcfg.get("layers", 12) != _layer_count(text)
        ):
            continue
        names.append(name)
    return names[:6]


# ---------------------------------------------------------------------------------------------------
# Loading into towers
# ---------------------------------------------------------------------------------------------------


def load_clip_weights_into(
    model: Any,
    source: str | Path | Mapping[str, torch.Tensor] | ClipWeights,
    strict: bool = True,
) -> ClipLoadReport:
    """Load pretrained CLIP weights into a model's open_clip towers.

    ``model`` is a :class:`~mfclip.models.base.DetectorModel` (its ``clip_towers()`` are filled, and the
    towers loaded are recorded in its ``pretrained_towers``), an open_clip ``CLIP``, or a mapping
    ``{"visual": VisionTransformer | None, "text": TextTransformer | None}``.
    A DetectorModel's ``on_clip_weights_loaded()`` runs after its towers were filled (Effort splits the new
    attention weights there).

    With ``strict`` every tensor of every present tower must come from the checkpoint, the checkpoint must
    not hold tower tensors the model lacks, and a recorded activation or head count must match the tower;
    otherwise a :class:`CheckpointError` names the problem and nothing is loaded. With ``strict=False``
    such problems are listed in the returned report instead. One omission is never an error: a model
    without a text tower (e.g. MFCLIP with ``losses.cmc = losses.kl = 0``) ignores the checkpoint's text
    weights and the report notes it. A checkpoint of which no tower fits anywhere is always an error.
    Shape mismatches are always errors, except a different image size (the positional embedding grid is
    interpolated bicubically) and a text context that is a shorter prefix or an exact multiple of the
    checkpoint's (truncated or repeated per segment).
    """
    weights = read_clip_weights(source)
    towers = _towers_of(model)
    _check_something_fits(towers, weights)
    report = ClipLoadReport(source=weights.source, source_format=weights.source_format)
    used: set[str] = set()
    planned: list[tuple[str, nn.Module, dict[str, torch.Tensor]]] = []
    for tower_name, (module, expected_keys) in towers.items():
        part = _tower_part(weights.state_dict, tower_name)
        full_names = {k: _full_key(tower_name, k) for k in part}
        if module is None:
            if part:
                _report_unplaced_tower(tower_name, len(part), weights, strict, report)
            continue
        if not part:
            message = (
                f"{weights.source}: holds no {_TOWER_TITLE[tower_name]} weights (keys "
                f"{_TOWER_KEYS[tower_name]}), but the model has one"
            )
            if strict:
                raise CheckpointError(message + "; pass strict=False to keep that tower's initial weights")
            report.warnings.append(message)
            report.missing[tower_name] = sorted(expected_keys)
            continue
        _check_architecture(tower_name, module, weights, strict, report)
        mapped, used_keys = _fit_tower(tower_name, module, expected_keys, part, weights, strict, report)
        used.update(full_names[k] for k in used_keys)
        planned.append((tower_name, module, mapped))
    for tower_name, module, tensors in planned:
        result = module.load_state_dict(tensors, strict=False)
        wrong = [k for k in result.unexpected_keys if k in tensors]
        if wrong:  # pragma: no cover - _fit_tower only keeps keys the tower has
            raise CheckpointError(
                f"{weights.source}: could not load {_preview(wrong)} into the {tower_name} tower"
            )
        report.loaded[tower_name] = len(tensors)
    report.skipped = sorted(k for k in weights.state_dict if k not in used)
    if hasattr(model, "mark_pretrained"):
        model.mark_pretrained(report.loaded)  # these towers now train at the pretrained learning rate
    if planned and callable(getattr(model, "on_clip_weights_loaded", None)):
        model.on_clip_weights_loaded()
    return report


_TOWER_TITLE = {"visual": "image tower", "text": "text tower"}
_TOWER_KEYS = {"visual": "visual.*", "text": "token_embedding.weight, transformer.*, ..."}


def _check_something_fits(
    towers: Mapping[str, tuple[nn.Module | None, set[str]]], weights: ClipWeights
) -> None:
    """Raise when no tower of the model has weights in the checkpoint (nothing would be loaded)."""
    held = {name: len(_tower_part(weights.state_dict, name)) for name in towers}
    if any(module is not None and held[name] for name, (module, _) in towers.items()):
        return
    present = [_TOWER_TITLE[name] for name, (module, _) in towers.items() if module is not None]
    model_has = f"only an open_clip {present[0]}" if present else "no open_clip image or text tower"
    unplaced = [
        f"{count} {_TOWER_TITLE[name]} tensors ({_TOWER_KEYS[name]})" for name, count in held.items() if count
    ]
    raise CheckpointError(
        f"{weights.source}: nothing to load: the model has {model_has}, so the checkpoint's "
        f"{' and '.join(unplaced)} have no place in it"
    )


def _report_unplaced_tower(
    tower: str, count: int, weights: ClipWeights, strict: bool, report: ClipLoadReport
) -> None:
    """The checkpoint holds a tower the model lacks: fine for the text tower, an error for the image one."""
    title = _TOWER_TITLE[tower]
    if tower == "text":
        report.notes.append(
            f"the model has no text tower: the checkpoint's {count} {title} tensors were not used"
        )
        return
    problem = (
        f"the checkpoint's {count} {title} tensors ({_TOWER_KEYS[tower]}) have no place: the model has no "
        f"open_clip {title} (e.g. vision.global_branch: cvit)"
    )
    if strict:
        raise CheckpointError(f"{weights.source}: {problem}; pass strict=False to load the other tower only")
    report.warnings.append(problem)


def _towers_of(model: Any) -> dict[str, tuple[nn.Module | None, set[str]]]:
    """Tower name -> (module to load into, the keys of that module which belong to the tower)."""
    if isinstance(model, Mapping):
        towers = {"visual": model.get("visual"), "text": model.get("text")}
    elif hasattr(model, "clip_towers"):
        towers = dict(model.clip_towers())
    elif hasattr(model, "visual") and hasattr(model, "token_embedding"):
        # An open_clip CLIP: the text tower's modules sit at its top level.
        visual_keys = set(model.visual.state_dict())
        text_keys = {k for k in model.state_dict() if k.startswith(TEXT_KEY_PREFIXES)}
        return {"visual": (model.visual, visual_keys), "text": (model, text_keys)}
    else:
        raise TypeError(
            f"cannot load CLIP weights into {type(model).__name__}: expected a DetectorModel, "
            "an open_clip CLIP or a mapping of towers"
        )
    out: dict[str, tuple[nn.Module | None, set[str]]] = {}
    for name in ("visual", "text"):
        module = towers.get(name)
        out[name] = (module, set(module.state_dict()) if module is not None else set())
    return out


def _tower_part(state: Mapping[str, torch.Tensor], tower: str) -> dict[str, torch.Tensor]:
    if tower == "visual":
        return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    return {k: v for k, v in state.items() if k.startswith(TEXT_KEY_PREFIXES)}


def _full_key(tower: str, key: str) -> str:
    return f"visual.{key}" if tower == "visual" else key


def _fit_tower(
    tower: str,
    module: nn.Module,
    expected_keys: set[str],
    part: dict[str, torch.Tensor],
    weights: ClipWeights,
    strict: bool,
    report: ClipLoadReport,
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Match checkpoint tensors to the tower's tensors, adapting what can be adapted; raise on the rest.

    Returns the tensors to load (tower keys) and the checkpoint keys they came from.
    """
    own = {k: v for k, v in module.state_dict().items() if k in expected_keys}
    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    mismatched: list[str] = []
    for key, target in own.items():
        src_key, value = key, part.get(key)
        if value is None and key == "text_projection.weight" and "text_projection" in part:
            src_key, value = "text_projection", part["text_projection"].t()  # tower uses nn.Linear
            report.adapted.append("text_projection transposed into an nn.Linear weight")
        if value is None:
            continue
        used.add(src_key)
        if value.shape != target.shape:
            adapted = _adapt_shape(tower, key, value, target, report)
            if adapted is None:
                mismatched.append(key)
                continue
            value = adapted
        mapped[key] = value
    if mismatched:
        raise CheckpointError(_shape_error(tower, mismatched, own, part, weights))
    missing = sorted(k for k in own if k not in mapped and k.rsplit(".", 1)[-1] not in _REBUILT_BUFFERS)
    optional = {"proj", "text_projection", "text_projection.weight", "text_projection.bias"}
    unexpected = sorted(
        k
        for k in part
        if k not in used and k.rsplit(".", 1)[-1] not in _REBUILT_BUFFERS and k not in optional
    )
    title = _TOWER_TITLE[tower]
    if strict and (missing or unexpected):
        details = []
        if missing:
            details.append(
                f"{len(missing)} tensors of the model's {title} are not in the checkpoint: "
                f"{_preview(missing)}"
            )
        if unexpected:
            details.append(
                f"{len(unexpected)} checkpoint tensors have no place in it: {_preview(unexpected)}"
            )
        raise CheckpointError(
            f"{weights.source}: the {title} does not match the checkpoint: {'; '.join(details)}. "
            f"{_architectures_hint(tower, own, part)}"
        )
    if missing:
        report.missing[tower] = missing
    return mapped, used


def _adapt_shape(
    tower: str, key: str, value: torch.Tensor, target: torch.Tensor, report: ClipLoadReport
) -> torch.Tensor | None:
    if key != "positional_embedding" or value.ndim != 2 or value.shape[1] != target.shape[1]:
        return None
    old, new = value.shape[0], target.shape[0]
    if tower == "visual":
        old_grid, new_grid = math.isqrt(old - 1), math.isqrt(new - 1)
        if old_grid**2 != old - 1 or new_grid**2 != new - 1:
            return None
        grid = value[1:].float().reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        resized = torch.cat([value[:1].float(), grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1)])
        report.adapted.append(
            f"visual.positional_embedding interpolated from a {old_grid}x{old_grid} "
            f"to a {new_grid}x{new_grid} grid"
        )
        return resized.to(value.dtype)
    if new < old:
        report.adapted.append(f"positional_embedding truncated from {old} to the first {new} positions")
        return value[:new]
    if new % old == 0:
        report.adapted.append(
            f"positional_embedding repeated {new // old} times ({old} positions per {old}-token segment)"
        )
        return value.repeat(new // old, 1)
    return None


def _check_architecture(
    tower: str, module: nn.Module, weights: ClipWeights, strict: bool, report: ClipLoadReport
) -> None:
    blocks = getattr(getattr(module, "transformer", None), "resblocks", None)
    if not blocks:
        return
    first = blocks[0]
    title = _TOWER_TITLE[tower]
    problems = []
    act = getattr(getattr(first, "mlp", None), "gelu", None)
    if weights.quick_gelu is not None and act is not None:
        from open_clip.transformer import QuickGELU

        uses_quick = isinstance(act, QuickGELU)
        if uses_quick != weights.quick_gelu:
            have, want = ("QuickGELU", "GELU") if uses_quick else ("GELU", "QuickGELU")
            hint = _QUICK_GELU_HINT if weights.quick_gelu else "build the towers with quick_gelu disabled"
            problems.append(
                f"the model's {title} uses {have} but the checkpoint was trained with {want}: {hint}"
            )
    heads = weights.vision_heads if tower == "visual" else weights.text_heads
    attn = getattr(first, "attn", None)
    tower_heads = getattr(attn, "num_heads", None)
    if heads is not None and tower_heads is not None and int(heads) != int(tower_heads):
        problems.append(
            f"the model's {title} has {tower_heads} attention heads, the checkpoint's has {heads} "
            "(same tensor shapes, different computation)"
        )
    for problem in problems:
        if strict:
            raise CheckpointError(f"{weights.source}: {problem}")
        report.warnings.append(problem)
    if weights.quick_gelu is None and act is not None and tower == "visual":
        report.warnings.append(
            "the checkpoint does not record its activation; OpenAI-trained weights need QuickGELU towers"
        )


def _shape_error(
    tower: str,
    mismatched: list[str],
    own: Mapping[str, torch.Tensor],
    part: Mapping[str, torch.Tensor],
    weights: ClipWeights,
) -> str:
    lines = [f"{weights.source}: tensor shapes do not fit the model's {_TOWER_TITLE[tower]}:"]
    for key in mismatched[:5]:
        found = part.get(key)
        if found is None and key == "text_projection.weight":
            found = part["text_projection"].t()
        assert found is not None
        lines.append(
            f"  {_full_key(tower, key)}: checkpoint has {tuple(found.shape)}, "
            f"model expects {tuple(own[key].shape)}"
        )
    if len(mismatched) > 5:
        lines.append(f"  ... and {len(mismatched) - 5} more")
    lines.append(_architectures_hint(tower, own, part))
    return "\n".join(lines)


def _architectures_hint(tower: str, own: Mapping[str, torch.Tensor], part: Mapping[str, torch.Tensor]) -> str:
    describe = _describe_vision if tower == "visual" else _describe_text
    theirs, ours = describe(part), describe(own)
    text = (
        f"The checkpoint's {_TOWER_TITLE[tower]} is {theirs or 'of unknown shape'}; "
        f"the model's is {ours or 'different'}."
    )
    full = {_full_key(tower, k): v for k, v in part.items()}
    names = _matching_open_clip_architectures(full)
    if names:
        text += f" Build the model with a matching architecture (open_clip: {', '.join(names)})."
    else:
        text += " Build the model with a matching architecture."
    return text


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

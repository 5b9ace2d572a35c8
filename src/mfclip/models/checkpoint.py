"""mfclip checkpoint directories: save a detector with its config and model card, load it back.

A checkpoint is a directory::

    config.json        {"format": "mfclip-checkpoint", "format_version": 2, "mfclip_version": ...,
                        "model": <model config, with its input contract>, "metadata": {...},
                        "weights": {file, bytes, sha256, ...}}
    model.safetensors  the model's state dict
    README.md          a generated model card (with Hugging Face Hub front matter)

:func:`load_checkpoint` also reads a Lightning ``.ckpt`` or a ``.pt`` file (weights read with
``torch.load(weights_only=True)``), taking the model config from the file's hyper-parameters or from
``config=``, and a Hugging Face Hub id (``hf-hub:owner/name[@revision]``). Before a model is built, the
tensor shapes its config implies are compared with the file's on the ``meta`` device, so a config that does
not describe the weights fails without allocating anything. The metadata is a
:class:`~mfclip.models.metadata.CheckpointMetadata`; version-1 directories load with the documented
defaults of :mod:`mfclip.models.metadata`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mfclip.models import registry
from mfclip.models.metadata import CheckpointMetadata, MetadataError, upgrade_legacy_document
from mfclip.models.readers import (
    ALIASES_KEY,
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    checkpoint_weights_path,
    file_record,
    is_checkpoint_dir,
    read_checkpoint_config,
    read_safetensors,
    read_torch_file,
    safetensors_shapes,
    strip_wrapper_prefixes,
    verify_file,
    verify_sidecar,
)
from mfclip.utils.config import ConfigError

if TYPE_CHECKING:
    from mfclip.models.base import DetectorModel
    from mfclip.utils.config import StrictConfig

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_CARD_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "checkpoint_fingerprint",
    "is_checkpoint_dir",
    "load_checkpoint",
    "load_state_dict_into",
    "read_checkpoint_config",
    "read_metadata",
    "read_torch_file",
    "save_checkpoint",
    "strip_wrapper_prefixes",
]

_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
ConfigSource = Any  # a StrictConfig, a mapping, a preset name, a YAML/JSON file or a checkpoint directory


# ---------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------


def save_checkpoint(
    model: DetectorModel,
    directory: str | Path,
    metadata: CheckpointMetadata | Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory (config.json, model.safetensors, README.md) and return it.

    ``metadata`` is a :class:`~mfclip.models.metadata.CheckpointMetadata` or a mapping of its fields
    (validated: an unknown key raises CheckpointError; free-form values go under ``extra``); the model
    card is rendered from it. A new directory appears in one rename; an existing one has its files
    replaced one by one, with config.json removed first and written last, so a crash never leaves a
    config beside the wrong weights.
    """
    from safetensors.torch import save_file

    from mfclip import __version__
    from mfclip.models.model_card import render_model_card

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: exists and is not a directory")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise CheckpointError(f"cannot save {type(model).__name__}: it has no config with to_dict()")
    model_config = config.to_dict()
    try:
        typed = CheckpointMetadata.coerce(metadata)
    except MetadataError as exc:
        raise CheckpointError(str(exc)) from None
    meta = typed.to_dict()
    tensors, aliases = _serializable_state_dict(model)
    counts = _parameter_counts(model)

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        weights_path = staging / WEIGHTS_NAME
        save_file(tensors, str(weights_path), metadata={"format": "pt", ALIASES_KEY: json.dumps(aliases)})
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "mfclip_version": __version__,
            "model": model_config,
            "metadata": meta,
            "weights": {
                "file": WEIGHTS_NAME,
                **file_record(weights_path),
                "tensors": len(tensors) + len(aliases),
                "parameters": counts["total"],
            },
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        card = render_model_card(
            model_config,
            typed.card_dict(),
            parameter_count=counts["total"],
            trainable_count=counts["trainable"],
            model_class=type(model).__name__,
            mfclip_version=__version__,
        )
        (staging / MODEL_CARD_NAME).write_text(card, encoding="utf-8")
        (staging / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        for name in (WEIGHTS_NAME, MODEL_CARD_NAME, CONFIG_NAME):
            _fsync(staging / name)
        if not directory.exists():
            staging.chmod(0o755)  # mkdtemp creates it private
            os.rename(staging, directory)
        else:
            with contextlib.suppress(FileNotFoundError):
                (directory / CONFIG_NAME).unlink()
            for name in (WEIGHTS_NAME, MODEL_CARD_NAME, CONFIG_NAME):
                os.replace(staging / name, directory / name)
            staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _serializable_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU tensors safetensors accepts: tied tensors stored once (aliases returned), partial views copied."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if tensor.numel():
            identity = (
                tensor.device,
                tensor.untyped_storage().data_ptr(),
                tensor.storage_offset(),
                tuple(tensor.shape),
                tuple(tensor.stride()),
                tensor.dtype,
            )
            if identity in seen:
                aliases[name] = seen[identity]
                continue
            seen[identity] = name
        tensors[name] = tensor
    by_storage: dict[tuple[Any, int], list[str]] = {}
    for name, tensor in tensors.items():
        if tensor.numel():
            by_storage.setdefault((tensor.device, tensor.untyped_storage().data_ptr()), []).append(name)
    for name, tensor in tensors.items():
        shares = tensor.numel() and len(by_storage[(tensor.device, tensor.untyped_storage().data_ptr())]) > 1
        partial = (
            tensor.numel() and tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
        )
        if shares or partial or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        tensors[name] = tensor.cpu()
    return tensors, aliases


def _parameter_counts(model: nn.Module) -> dict[str, int]:
    unique = {id(p): p for p in model.parameters()}
    return {
        "total": sum(p.numel() for p in unique.values()),
        "trainable": sum(p.numel() for p in unique.values() if p.requires_grad),
    }


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def checkpoint_fingerprint(checkpoint: str | Path) -> str:
    """Identifies the weights: their recorded SHA-256 for a checkpoint directory, else size and mtime."""
    path = Path(checkpoint)
    config = path / CONFIG_NAME
    if path.is_dir() and config.is_file():
        try:
            document = json.loads(config.read_text(encoding="utf-8"))
            digest = (document.get("weights") or {}).get("sha256")
            if digest:
                return f"sha256:{digest}"
        except (OSError, json.JSONDecodeError):
            pass
        weights = path / WEIGHTS_NAME
        stat = weights.stat() if weights.exists() else config.stat()
    else:
        stat = path.stat()
    return f"stat:{stat.st_size}:{stat.st_mtime_ns}"


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    config: StrictConfig | Mapping[str, Any] | str | Path | None = None,
    revision: str | None = None,
) -> tuple[DetectorModel, CheckpointMetadata]:
    """Rebuild a detector from a checkpoint directory (or a Lightning ``.ckpt`` / ``.pt`` file, or a Hub id).

    Returns the model in eval mode on ``map_location`` and the checkpoint's metadata. ``config`` (a model
    config, a mapping, a YAML/JSON file, a checkpoint directory or a registry model name) overrides the stored
    model config; a ``.ckpt``/``.pt`` file without one in its hyper-parameters needs it. With ``strict`` the
    weights must match the model's tensors one for one. ``hf-hub:owner/name[@revision]`` (or ``revision=``)
    is resolved through the Hugging Face cache first (see :mod:`mfclip.models.hub`); any other string is a
    local path (a plain ``owner/name`` never reaches the Hub).
    """
    from mfclip.models import hub

    path = hub.resolve_checkpoint(path, revision=revision)
    if path.is_file():
        if path.suffix in _TORCH_SUFFIXES:
            model, metadata = _load_torch_checkpoint(path, strict, config)
        elif path.suffix == ".safetensors" and _is_checkpoint_weights(path):
            model, metadata = _load_directory(path.parent, strict, config)
        elif path.suffix == ".safetensors":
            if config is None and is_checkpoint_dir(path.parent):
                config = path.parent  # another weights file of a checkpoint (EMA, say): the same model
            if config is None:
                raise CheckpointError(
                    f"{path}: a bare weights file records no model config; pass config= (a model config, "
                    "YAML file or model name)"
                )
            model = _build_checked(_model_config(config), str(config), safetensors_shapes(path), path, strict)
            state, aliases = read_safetensors(path)
            _restore_aliases(state, aliases)
            load_state_dict_into(model, state, strict=strict, source=str(path))
            metadata = CheckpointMetadata()
        else:
            raise CheckpointError(
                f"{path}: not a checkpoint: expected an mfclip checkpoint directory, "
                "a Lightning .ckpt or a .pt file"
            )
    else:
        model, metadata = _load_directory(path, strict, config)
    model.mark_pretrained()  # fine-tuning a trained detector: all its towers hold learned weights
    return model.to(map_location).eval(), metadata


def _is_checkpoint_weights(path: Path) -> bool:
    """Whether ``path`` is the weights file its folder's checkpoint config.json names."""
    if not is_checkpoint_dir(path.parent):
        return False
    return checkpoint_weights_path(path.parent, read_checkpoint_config(path.parent)).name == path.name


def _load_directory(
    directory: Path, strict: bool, config: ConfigSource | None
) -> tuple[DetectorModel, CheckpointMetadata]:
    document = read_checkpoint_config(directory)
    if document["format_version"] == 1:
        upgrade_legacy_document(document)  # a recorded metadata "transform" becomes the input contract
    config_path = directory / CONFIG_NAME
    weights_path = checkpoint_weights_path(directory, document)
    if not weights_path.is_file():
        raise CheckpointError(f"{directory}: {weights_path.name} is missing")
    verified = _file_identity(weights_path)
    verify_file(weights_path, document.get("weights") or {}, CONFIG_NAME)
    if config is None:
        model_config, origin = _model_config(document["model"], str(config_path)), str(config_path)
    else:
        model_config, origin = _model_config(config), str(config)
    model = _build_checked(model_config, origin, safetensors_shapes(weights_path), weights_path, strict)
    state, aliases = read_safetensors(weights_path)
    if _file_identity(weights_path) != verified:  # the tensors read may not be the bytes verified
        raise CheckpointError(
            f"{weights_path}: replaced while it was being loaded (a save in progress?); load it again"
        )
    _restore_aliases(state, aliases)
    load_state_dict_into(model, state, strict=strict, source=str(weights_path))
    return model, read_metadata(document, config_path)


def read_metadata(document: Mapping[str, Any], config_path: str | Path) -> CheckpointMetadata:
    """The typed metadata of a checkpoint's config.json (format 1: read leniently, see metadata.py)."""
    stored = document.get("metadata") or {}
    try:
        if document.get("format_version") == 1:
            return CheckpointMetadata.from_legacy(stored, source=f"{config_path}: metadata")
        return CheckpointMetadata.coerce(stored, source=f"{config_path}: metadata")
    except MetadataError as exc:
        raise CheckpointError(str(exc)) from None


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _restore_aliases(state: dict[str, torch.Tensor], aliases: Mapping[str, str]) -> None:
    for alias, target in aliases.items():
        if target in state and alias not in state:
            state[alias] = state[target]


def _load_torch_checkpoint(
    path: Path, strict: bool, config: ConfigSource | None
) -> tuple[DetectorModel, CheckpointMetadata]:
    verify_sidecar(path)
    payload = read_torch_file(path)
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(payload).__name__}")
    hyper = payload.get("hyper_parameters") or payload.get("hparams") or {}
    if config is not None:
        model_config, origin = _model_config(config), str(config)
    else:
        found = _find_model_config(payload, hyper)
        origin = f"{path} (hyper-parameters)"
        if found is None:
            raise CheckpointError(
                f"{path}: the file records no model config (looked under hyper_parameters 'model', "
                "'model_config', 'config.model'); pass config= (a model config, YAML file or model name)"
            )
        model_config = _model_config(found, origin)
    tensors = _find_state_dict(payload)
    if not tensors:
        raise CheckpointError(f"{path}: no state dict found in the file")
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    model = _build_checked(model_config, origin, shapes, path, strict)
    load_state_dict_into(model, tensors, strict=strict, source=str(path))
    metadata: dict[str, Any] = {}
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if key in payload and isinstance(payload[key], (int, float, str)):
            metadata[key] = payload[key]
    if isinstance(hyper, Mapping) and isinstance(hyper.get("metadata"), Mapping):
        metadata.update(hyper["metadata"])
    try:
        return model, CheckpointMetadata.from_legacy(metadata, source=f"{path}: metadata")
    except MetadataError as exc:
        raise CheckpointError(str(exc)) from None


def _find_state_dict(payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a training checkpoint (``state_dict``, ``model_state_dict``, ``model``) or file."""
    for key in ("state_dict", "model_state_dict", "model"):
        inner = payload.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return {str(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    return {str(k): v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def _find_model_config(payload: Mapping[str, Any], hyper: Any) -> Mapping[str, Any] | None:
    candidates: list[Any] = []
    if isinstance(hyper, Mapping):
        candidates += [hyper.get("model"), hyper.get("model_config")]
        for key in ("config", "cfg"):
            nested = hyper.get(key)
            if isinstance(nested, Mapping):
                candidates.append(nested.get("model"))
    candidates += [payload.get("model_config"), payload.get("config")]
    for candidate in candidates:
        if isinstance(candidate, Mapping) and candidate:
            if candidate.get("format") == FORMAT and isinstance(candidate.get("model"), Mapping):
                return candidate["model"]
            return candidate
    return None


def _model_config(source: ConfigSource, origin: str | None = None) -> StrictConfig:
    """The validated model config ``source`` names (resolved by the registry), as a CheckpointError."""
    try:
        if origin is not None and isinstance(source, Mapping):
            return registry.config_from_dict(source, source=origin)
        return registry.resolve_model_config(source)
    except (ConfigError, KeyError, TypeError) as exc:
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        where = origin or (str(source) if isinstance(source, (str, Path)) else "model config")
        raise CheckpointError(message if message.startswith(where) else f"{where}: {message}") from None


# ---------------------------------------------------------------------------------------------------
# Building a model that fits its weights
# ---------------------------------------------------------------------------------------------------

# Config keys whose value repeats a block of tensors: each repetition holds at least one tensor.
_REPEAT_KEYS = ("layers", "depth", "num_layers", "blocks")


def _build_checked(
    config: StrictConfig, origin: str, shapes: Mapping[str, tuple[int, ...]], source: Path, strict: bool
) -> DetectorModel:
    """Build the model of ``config`` after checking, allocation-free, that it fits tensors of ``shapes``.

    Repetition counts (``layers``, ...) are bounded by the file's tensor count; then the model is built on the
    ``meta`` device and its tensor shapes are matched against ``shapes`` with the rules of
    :func:`load_state_dict_into`. Only a config that passes is built for real.
    """
    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for field, value in _repeat_counts(config_dict):
        if value > len(shapes):
            raise CheckpointError(
                f"{origin}: model.{field} = {value} cannot describe {source.name}, which holds "
                f"{len(shapes)} tensors in all (nothing was allocated)"
            )
    skeleton = _build_on_meta(config, origin)
    if skeleton is not None:
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        match = _match_keys(expected, shapes)
        _raise_for_match(match, str(source), strict, config_dict, expected, shapes)
        if not strict:
            held = sum(_numel(shapes[k]) for k in match.mapping.values())
            absent = sum(_numel(expected[k]) for k in match.missing)
            if absent > max(held, 1):
                raise CheckpointError(
                    f"{source}: the model built from {origin} has {absent:,} values that the file does "
                    f"not hold, more than the {held:,} it does (nothing was allocated); check the config"
                )
        del skeleton
    return _build_model(config, origin)


def _build_on_meta(config: StrictConfig, origin: str) -> nn.Module | None:
    """The model of ``config`` on the ``meta`` device (no memory), or None when its builder cannot."""
    try:
        with torch.device("meta"):
            return _build_model(config, origin)
    except (NotImplementedError, RuntimeError):
        return None


def _build_model(config: StrictConfig, origin: str) -> DetectorModel:
    try:
        return registry.model_from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise CheckpointError(f"{origin}: cannot build the model from its config: {message}") from None


def _repeat_counts(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, int]]:
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from _repeat_counts(value, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool) and str(key).endswith(_REPEAT_KEYS):
            yield f"{prefix}{key}", value
        elif isinstance(value, list) and str(key) == "convs_per_block":
            total = sum(v for v in value if isinstance(v, int) and not isinstance(v, bool))
            yield f"{prefix}{key}", total


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


# ---------------------------------------------------------------------------------------------------
# Matching a state dict to a model
# ---------------------------------------------------------------------------------------------------


@dataclass
class _KeyMatch:
    """How a state dict's keys map onto a model's, and what does not fit."""

    mapping: dict[str, str]  # model key -> state key
    mismatched: list[str]  # model keys whose shapes differ
    missing: list[str]  # model keys the state lacks
    unexpected: list[str]  # state keys (wrapper prefixes removed) the model lacks


def _match_keys(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, tuple[int, ...]]) -> _KeyMatch:
    """Match state keys to model keys, wrapper prefixes removed and a container prefix (``model.``) found."""
    cleaned = {strip_wrapper_prefixes(k): k for k in state}
    prefix = _container_prefix(cleaned, expected)
    if prefix:
        cleaned = {k[len(prefix) :]: v for k, v in cleaned.items() if k.startswith(prefix)}
    mapping = {k: original for k, original in cleaned.items() if k in expected}
    return _KeyMatch(
        mapping=mapping,
        mismatched=[k for k, original in mapping.items() if tuple(state[original]) != tuple(expected[k])],
        missing=sorted(k for k in expected if k not in cleaned),
        unexpected=sorted(k for k in cleaned if k not in expected),
    )


def _raise_for_match(
    match: _KeyMatch,
    source: str,
    strict: bool,
    config: Mapping[str, Any] | None,
    expected: Mapping[str, tuple[int, ...]],
    state: Mapping[str, tuple[int, ...]],
) -> None:
    """The errors of :func:`load_state_dict_into` for a key match: shapes always, keys with ``strict``.

    With the model ``config`` (the allocation-free check before building), the message also compares sizes
    and names config fields that may be the cause.
    """
    sizes = ""
    if config is not None:
        model_total = sum(_numel(s) for s in expected.values())
        file_total = sum(_numel(s) for s in state.values())
        sizes = (
            f"\n  the model config describes {model_total:,} values in {len(expected)} tensors; "
            f"the file holds {file_total:,} in {len(state)} (nothing was allocated)"
        )
    if match.mismatched:
        lines = [
            f"{key}: checkpoint has {tuple(state[match.mapping[key]])}, model expects {tuple(expected[key])}"
            for key in match.mismatched[:5]
        ]
        more = f"\n  ... and {len(match.mismatched) - 5} more" if len(match.mismatched) > 5 else ""
        fields = ""
        if config is not None:
            first = match.mismatched[0]
            fields = _fields_hint(config, tuple(expected[first]), tuple(state[match.mapping[first]]))
        raise CheckpointError(
            f"{source}: tensor shapes do not match the model "
            "(was it saved from a different model config?):\n  " + "\n  ".join(lines) + more + fields + sizes
        )
    if strict and (match.missing or match.unexpected):
        parts = []
        if match.missing:
            parts.append(f"{len(match.missing)} missing keys: {_preview(match.missing)}")
        if match.unexpected:
            parts.append(f"{len(match.unexpected)} unexpected keys: {_preview(match.unexpected)}")
        raise CheckpointError(f"{source}: weights do not match the model: {'; '.join(parts)}{sizes}")


def _fields_hint(config: Mapping[str, Any], expected: tuple[int, ...], found: tuple[int, ...]) -> str:
    """Config fields whose value is a dimension the model has where the file has another (a likely cause)."""
    dims = {e for e, f in zip(expected, found, strict=False) if e != f} | (
        set(expected[len(found) :]) if len(expected) > len(found) else set()
    )
    fields = [path for path, value in _int_fields(config) if value in dims and value > 1]
    if not fields or len(fields) > 4:
        return ""
    return "\n  model config fields with that size: " + ", ".join(f"model.{f}" for f in fields)


def _int_fields(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, int]]:
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from _int_fields(value, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def load_state_dict_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True, source: str = "checkpoint"
) -> dict[str, list[str]]:
    """Load ``state`` into ``model`` after removing wrapper prefixes, with clear errors.

    Tolerates ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes and a container
    prefix such as a LightningModule's ``model.`` (keys outside the container are ignored). Shape mismatches
    always raise; missing or unexpected keys raise with ``strict``. Nothing is loaded when an error is raised.
    Returns ``{"missing": [...], "unexpected": [...]}``.
    """
    own = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in own.items()}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    match = _match_keys(expected, shapes)
    _raise_for_match(match, source, strict, None, expected, shapes)
    model.load_state_dict({k: state[v] for k, v in match.mapping.items()}, strict=False)
    return {"missing": match.missing, "unexpected": match.unexpected}


def _container_prefix(state: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """The prefix (e.g. ``model.``) under which most of ``expected``'s keys appear in ``state``, or ''."""
    direct = sum(k in expected for k in state)
    counts: dict[str, int] = {}
    for key in state:
        for i, char in enumerate(key):
            if char == "." and key[i + 1 :] in expected:
                counts[key[: i + 1]] = counts.get(key[: i + 1], 0) + 1
    if not counts:
        return ""
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] > direct else ""


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

"""mfclip checkpoint directories: save a detector with its config and model card, load it back.

A checkpoint is a directory::

    config.json        {"format": "mfclip-checkpoint", "format_version": 1, "mfclip_version": ...,
                        "model": <model config>, "metadata": {...}, "weights": {file, bytes, sha256, ...}}
    model.safetensors  the model's state dict
    README.md          a generated model card

:func:`load_checkpoint` also reads a Lightning ``.ckpt`` or a ``.pt`` file (weights read with
``torch.load(weights_only=True)``), taking the model config from the file's hyper-parameters or from
``config=``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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
    "read_torch_file",
    "save_checkpoint",
    "strip_wrapper_prefixes",
]

FORMAT = "mfclip-checkpoint"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"

_ALIASES_KEY = "mfclip_aliases"  # safetensors metadata: {dropped key: kept key} for tied tensors
_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, malformed or does not fit the model (the message says so)."""


# ---------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------


def save_checkpoint(
    model: DetectorModel, directory: str | Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` as a checkpoint directory (config.json, model.safetensors, README.md) and return it.

    ``metadata`` is free-form JSON data about the model; the model card reads the keys ``name``,
    ``train_manifest``, ``datasets``, ``protocol``, ``metrics``, ``synthetic``, ``clip_weights``, ``epochs``,
    ``notes``. A new directory appears in one rename; an existing one has its files replaced one by one, with
    config.json removed first and written last, so a crash never leaves a config beside the wrong weights.
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
    meta = _jsonable(dict(metadata or {}))
    tensors, aliases = _serializable_state_dict(model)
    counts = _parameter_counts(model)

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        weights_path = staging / WEIGHTS_NAME
        save_file(tensors, str(weights_path), metadata={"format": "pt", _ALIASES_KEY: json.dumps(aliases)})
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "mfclip_version": __version__,
            "model": model_config,
            "metadata": meta,
            "weights": {
                "file": WEIGHTS_NAME,
                "bytes": weights_path.stat().st_size,
                "sha256": _sha256(weights_path),
                "tensors": len(tensors) + len(aliases),
                "parameters": counts["total"],
            },
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        card = render_model_card(
            model_config,
            meta,
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


def _jsonable(value: Any, where: str = "metadata") -> Any:
    """Plain JSON values from metadata (Paths, numpy and tensor scalars converted); others rejected."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict(), where)
    raise CheckpointError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def is_checkpoint_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory whose config.json declares the mfclip checkpoint format."""
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        return False
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


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


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The validated config.json of a checkpoint directory (cheap: the weights are not read)."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: checkpoint not found")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (it is a file)")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: not an mfclip checkpoint: {CONFIG_NAME} is missing")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{config_path}: not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, found {type(data).__name__}")
    fmt = data.get("format")
    if fmt != FORMAT:
        hint = ""
        if "model_type" in data or "architectures" in data:
            hint = " (this looks like a Hugging Face model folder: load it as CLIP weights instead)"
        elif (directory / "open_clip_config.json").is_file():
            hint = " (this looks like an open_clip folder: load it as CLIP weights instead)"
        raise CheckpointError(f"{config_path}: format is {fmt!r}, expected {FORMAT!r}{hint}")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{config_path}: format_version must be an integer, found {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {version} was written by a newer mfclip "
            f"({data.get('mfclip_version', 'unknown version')}); this one reads up to {FORMAT_VERSION}"
        )
    if version < 1:
        raise CheckpointError(f"{config_path}: unknown format_version {version}")
    if not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{config_path}: 'model' (the model config) is missing or not an object")
    if not isinstance(data.get("metadata", {}), dict):
        raise CheckpointError(f"{config_path}: 'metadata' is not an object")
    data.setdefault("metadata", {})
    return data


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    config: StrictConfig | Mapping[str, Any] | str | Path | None = None,
) -> tuple[DetectorModel, dict[str, Any]]:
    """Rebuild a detector from a checkpoint directory (or a Lightning ``.ckpt`` / ``.pt`` file).

    Returns the model in eval mode on ``map_location`` and the checkpoint's metadata. ``config`` (a model
    config, a mapping, a YAML/JSON file or a registry model name) overrides the stored model config; a
    ``.ckpt``/``.pt`` file without one in its hyper-parameters needs it. With ``strict`` the weights must
    match the model's tensors one for one.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_file():
        if path.suffix in _TORCH_SUFFIXES:
            model, metadata = _load_torch_checkpoint(path, strict, config)
        elif path.suffix == ".safetensors" and is_checkpoint_dir(path.parent):
            model, metadata = _load_directory(path.parent, strict, config)
        elif path.suffix == ".safetensors":
            if config is None:
                raise CheckpointError(
                    f"{path}: a bare weights file records no model config; pass config= (a model config, "
                    "YAML file or model name)"
                )
            state, aliases = _read_safetensors(path)
            model = _build_model(_resolve_config(config), str(config))
            _restore_aliases(state, aliases)
            load_state_dict_into(model, state, strict=strict, source=str(path))
            metadata = {}
        else:
            raise CheckpointError(
                f"{path}: not a checkpoint: expected an mfclip checkpoint directory, "
                "a Lightning .ckpt or a .pt file"
            )
    else:
        model, metadata = _load_directory(path, strict, config)
    model.mark_pretrained()  # fine-tuning a trained detector: all its towers hold learned weights
    return model.to(map_location).eval(), metadata


def _load_directory(
    directory: Path, strict: bool, config: StrictConfig | Mapping[str, Any] | str | Path | None
) -> tuple[DetectorModel, dict[str, Any]]:
    document = read_checkpoint_config(directory)
    config_path = directory / CONFIG_NAME
    weights_info = document.get("weights") if isinstance(document.get("weights"), dict) else {}
    weights_path = directory / str(weights_info.get("file", WEIGHTS_NAME))
    if not weights_path.is_file():
        raise CheckpointError(f"{directory}: {weights_path.name} is missing")
    _verify_weights_file(weights_path, weights_info)
    state, aliases = _read_safetensors(weights_path)
    model_config = _resolve_config(config) if config is not None else document["model"]
    model = _build_model(model_config, config_path if config is None else str(config))
    _restore_aliases(state, aliases)
    load_state_dict_into(model, state, strict=strict, source=str(weights_path))
    return model, document["metadata"]


def _verify_weights_file(path: Path, info: Mapping[str, Any]) -> None:
    size = path.stat().st_size
    expected_size = info.get("bytes")
    if isinstance(expected_size, int) and size != expected_size:
        state = "truncated" if size < expected_size else "longer than written"
        raise CheckpointError(f"{path}: {state} ({size} bytes, config.json records {expected_size})")
    expected_hash = info.get("sha256")
    if isinstance(expected_hash, str) and _sha256(path) != expected_hash:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt or was modified after saving")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # SafetensorError, OSError, header decoding errors
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {exc}") from None
    aliases: dict[str, str] = {}
    if _ALIASES_KEY in metadata:
        try:
            aliases = dict(json.loads(metadata[_ALIASES_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError):
            raise CheckpointError(f"{path}: unreadable tied-tensor table in the file header") from None
    return state, aliases


def _restore_aliases(state: dict[str, torch.Tensor], aliases: Mapping[str, str]) -> None:
    for alias, target in aliases.items():
        if target in state and alias not in state:
            state[alias] = state[target]


def _load_torch_checkpoint(
    path: Path, strict: bool, config: StrictConfig | Mapping[str, Any] | str | Path | None
) -> tuple[DetectorModel, dict[str, Any]]:
    payload = read_torch_file(path)
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(payload).__name__}")
    hyper = payload.get("hyper_parameters") or payload.get("hparams") or {}
    if config is not None:
        model_config: Any = _resolve_config(config)
        origin = str(config)
    else:
        model_config = _find_model_config(payload, hyper)
        origin = f"{path} (hyper-parameters)"
        if model_config is None:
            raise CheckpointError(
                f"{path}: the file records no model config (looked under hyper_parameters 'model', "
                "'model_config', 'config.model'); pass config= (a model config, YAML file or model name)"
            )
    tensors = _find_state_dict(payload)
    if not tensors:
        raise CheckpointError(f"{path}: no state dict found in the file")
    model = _build_model(model_config, origin)
    load_state_dict_into(model, tensors, strict=strict, source=str(path))
    metadata: dict[str, Any] = {}
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if key in payload and isinstance(payload[key], (int, float, str)):
            metadata[key] = payload[key]
    if isinstance(hyper, Mapping) and isinstance(hyper.get("metadata"), Mapping):
        metadata.update(hyper["metadata"])
    return model, metadata


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


def _resolve_config(config: StrictConfig | Mapping[str, Any] | str | Path) -> Any:
    """A model config from a config object, a mapping, a YAML/JSON file or a registry model name."""
    if hasattr(config, "to_dict") or isinstance(config, Mapping):
        return config
    path = Path(config)
    if path.is_dir() and is_checkpoint_dir(path):
        return read_checkpoint_config(path)["model"]
    if path.is_file():
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"{path}: not valid JSON: {exc}") from None
            if isinstance(data, dict) and data.get("format") == FORMAT:
                return data.get("model")
            return data
        from mfclip.utils.config import load_yaml

        return load_yaml(path)
    from mfclip.models import registry

    try:
        return registry.get_model_config(str(config))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{config}: neither a config file nor a known model name: {exc}") from None


def _build_model(model_config: Any, origin: Any) -> DetectorModel:
    from mfclip.models import registry

    try:
        return registry.model_from_config(model_config)
    except (ValueError, KeyError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise CheckpointError(f"{origin}: cannot build the model from its config: {message}") from None


def read_torch_file(path: str | Path) -> Any:
    """Read a ``.safetensors`` file or a pickled torch file safely (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {exc}") from None
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            # Lightning checkpoints may hold its AttributeDict: allow exactly that container and retry.
            if "AttributeDict" not in str(exc):
                raise
            with torch.serialization.safe_globals(_lightning_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise CheckpointError(f"{path}: a TorchScript archive, not a state dict") from None
        raise CheckpointError(f"{path}: unreadable torch file: {_first_line(exc)}") from None
    except Exception as exc:  # UnpicklingError, EOFError, zip errors, ...
        if type(exc).__name__ == "UnpicklingError":
            raise CheckpointError(
                f"{path}: holds Python objects that cannot be loaded safely (weights_only=True refused: "
                f"{_first_line(exc)}); save a plain state dict instead"
            ) from None
        raise CheckpointError(f"{path}: corrupt or unreadable torch file: {_first_line(exc)}") from None


def _lightning_safe_globals() -> list[Any]:
    """Container types Lightning puts in checkpoints, which are safe to reconstruct."""
    allowed: list[Any] = []
    with contextlib.suppress(ImportError):
        from lightning.fabric.utilities.data import AttributeDict

        allowed.append(AttributeDict)
    with contextlib.suppress(ImportError):
        from pytorch_lightning.utilities.parsing import AttributeDict as LegacyAttributeDict

        allowed.append(LegacyAttributeDict)
    return allowed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# Matching a state dict to a model
# ---------------------------------------------------------------------------------------------------


def load_state_dict_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True, source: str = "checkpoint"
) -> dict[str, list[str]]:
    """Load ``state`` into ``model`` after removing wrapper prefixes, with clear errors.

    Tolerates ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes and a container
    prefix such as a LightningModule's ``model.`` (keys outside the container are ignored). Shape mismatches
    always raise; missing or unexpected keys raise with ``strict``. Nothing is loaded when an error is raised.
    Returns ``{"missing": [...], "unexpected": [...]}``.
    """
    expected = model.state_dict()
    cleaned = {strip_wrapper_prefixes(k): v for k, v in state.items()}
    prefix = _container_prefix(cleaned, expected)
    if prefix:
        cleaned = {k[len(prefix) :]: v for k, v in cleaned.items() if k.startswith(prefix)}
    mismatched = [
        f"{k}: checkpoint has {tuple(v.shape)}, model expects {tuple(expected[k].shape)}"
        for k, v in cleaned.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        more = f"\n  ... and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise CheckpointError(
            f"{source}: tensor shapes do not match the model "
            "(was it saved from a different model config?):\n  " + "\n  ".join(mismatched[:5]) + more
        )
    missing = sorted(k for k in expected if k not in cleaned)
    unexpected = sorted(k for k in cleaned if k not in expected)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
        raise CheckpointError(f"{source}: weights do not match the model: {'; '.join(parts)}")
    model.load_state_dict({k: v for k, v in cleaned.items() if k in expected}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def _container_prefix(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
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


def strip_wrapper_prefixes(key: str) -> str:
    """Remove the prefixes DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add."""
    while key.startswith("module."):
        key = key[len("module.") :]
    return key.replace("_orig_mod.", "")


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

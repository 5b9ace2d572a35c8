"""Architectures are data: ``configs/models/*.yaml``. This module lists them and builds models.

A model YAML's ``type`` field (default ``mfclip``) selects a builder from a small table; other model
families register theirs with :func:`register_model_type`::

    @register_model_type("timm_cnn", TimmCNNConfig)
    def build_timm_cnn(config: TimmCNNConfig) -> DetectorModel: ...

A model config comes from a preset name, a YAML/JSON file or a checkpoint directory
(:func:`resolve_model_config`): this module is the one place that resolves them.

Overrides are dotted keys or nested dicts: ``create_model("mfclip-tiny", **{"spa.mode": "matrix"})`` or
``create_model("mfclip-tiny", spa={"mode": "none"})``. ``clip_weights=PATH`` loads pretrained CLIP weights
into the model's open_clip towers after it is built.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfclip.models.readers import CONFIG_NAME, FORMAT, CheckpointError, read_checkpoint_config
from mfclip.utils.config import ConfigError, StrictConfig, apply_overrides, closest, deep_merge, load_yaml

MODELS_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"
DEFAULT_TYPE = "mfclip"
# Modules whose import registers the built-in model types (a missing optional one is skipped).
_BUILTIN_TYPE_MODULES = ("mfclip.models.mfclip", "mfclip.models.baselines", "mfclip.models.peers")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelType:
    """A registered model family: its config class and the function that builds a model from it."""

    name: str
    config_class: type[StrictConfig]
    builder: Callable[[Any], Any]


_MODEL_TYPES: dict[str, ModelType] = {}


def register_model_type(
    name: str, config_class: type[StrictConfig] | None = None
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Decorator registering a builder for model YAMLs with ``type: name``.

    The builder is a function ``builder(config) -> DetectorModel`` or a DetectorModel class taking the
    config. ``config_class`` (a StrictConfig subclass) validates the YAML; when omitted it is taken from
    the type annotation of the builder's first parameter.
    """

    def decorator(builder: Callable[[Any], Any]) -> Callable[[Any], Any]:
        cls = config_class or _annotated_config_class(builder)
        if cls is None:
            raise TypeError(
                f"register_model_type({name!r}): annotate the first parameter of {_qualified(builder)} with "
                "its StrictConfig class, or pass config_class"
            )
        existing = _MODEL_TYPES.get(name)
        # Re-importing the defining module may register the same builder again; anything else clashes.
        if existing is not None and _qualified(existing.builder) != _qualified(builder):
            raise ValueError(f"model type {name!r} is already registered by {_qualified(existing.builder)}")
        _MODEL_TYPES[name] = ModelType(name, cls, builder)
        return builder

    return decorator


def _annotated_config_class(builder: Callable[..., Any]) -> type[StrictConfig] | None:
    """The StrictConfig class annotated on the first parameter of a builder function or class."""
    import inspect
    import typing

    target = builder.__init__ if inspect.isclass(builder) else builder  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
        parameters = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
    except (NameError, TypeError, ValueError):
        return None
    if not parameters:
        return None
    hint = hints.get(parameters[0].name)
    return hint if isinstance(hint, type) and issubclass(hint, StrictConfig) else None


def _qualified(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _load_builtin_types() -> None:
    for module in _BUILTIN_TYPE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def list_model_types() -> list[str]:
    """Registered ``type`` values."""
    _load_builtin_types()
    return sorted(_MODEL_TYPES)


def model_type(name: str) -> ModelType:
    """The registered model type ``name``; unknown names raise ConfigError listing the valid ones."""
    if name not in _MODEL_TYPES:
        _load_builtin_types()
    if name not in _MODEL_TYPES:
        hint = closest(name, _MODEL_TYPES)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"unknown model type {name!r}{suggestion} Valid types: {', '.join(sorted(_MODEL_TYPES))}"
        )
    return _MODEL_TYPES[name]


# ---- presets -------------------------------------------------------------------------------------------
def list_models(pattern: str | None = None) -> list[str]:
    """Names of the bundled model presets, optionally filtered by an fnmatch ``pattern``."""
    names = sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def _is_path(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return (
        isinstance(name_or_path, Path)
        or text.endswith((".yaml", ".yml", ".json"))
        or "/" in text
        or Path(text).is_dir()
    )


def _raw_config(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if path.is_dir():  # a checkpoint directory: the model config in its config.json
            try:
                return dict(read_checkpoint_config(path)["model"]), str(path / CONFIG_NAME)
            except CheckpointError as exc:
                raise ConfigError(str(exc)) from None
        data = load_yaml(path)
        if data.get("format") == FORMAT and isinstance(data.get("model"), dict):
            data = data["model"]
        return data, str(path)
    name = str(name_or_path)
    path = MODELS_DIR / f"{name}.yaml"
    if not path.is_file():
        valid = list_models()
        hint = closest(name, valid)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"unknown model {name!r}.{suggestion} Valid names: {', '.join(valid)}")
    data = load_yaml(path)
    data.setdefault("name", name)
    return data, str(path)


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1, "c": {"d": 2}}`` into nested dicts."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = [p for p in str(key).split(".") if p]
        if not parts:
            raise ConfigError(f"override {key!r} has an empty key")
        update: Any = dict(value) if isinstance(value, Mapping) else value
        for part in reversed(parts):
            update = {part: update}
        nested = deep_merge(nested, update)
    return nested


def resolve_model_dict(
    name_or_path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    dotlist: Iterable[str] = (),
) -> tuple[dict[str, Any], str]:
    """A preset's (or file's) raw config with overrides applied, and where it came from."""
    data, source = _raw_config(name_or_path)
    if overrides:
        data = deep_merge(data, _nest(overrides))
    data = apply_overrides(data, dotlist)
    return data, source


def config_from_dict(data: Mapping[str, Any] | StrictConfig, source: str = "model config") -> StrictConfig:
    """Validate a model config dict with the config class its ``type`` selects."""
    if isinstance(data, StrictConfig):
        return data
    type_name = str(data.get("type", DEFAULT_TYPE))
    entry = model_type(type_name)
    payload = dict(data)
    if "type" not in payload and "type" in entry.config_class.model_fields:
        payload["type"] = type_name
    return entry.config_class.from_dict(payload, source=source)


def resolve_model_config(source: StrictConfig | Mapping[str, Any] | str | Path) -> StrictConfig:
    """The validated model config ``source`` names: a config object, a mapping, a preset name, a YAML or JSON
    file (a checkpoint's config.json included) or a checkpoint directory."""
    if isinstance(source, StrictConfig):
        return source
    if isinstance(source, Mapping):
        return config_from_dict(source)
    return get_model_config(source)


def get_model_config(name_or_path: str | Path, **overrides: Any) -> StrictConfig:
    """The validated config of a preset (``ModelConfig`` for ``type: mfclip``), with overrides applied."""
    overrides.pop("clip_weights", None)
    overrides.pop("backbone_weights", None)
    data, source = resolve_model_dict(name_or_path, overrides)
    return config_from_dict(data, source=source)


def model_from_config(config: StrictConfig | Mapping[str, Any]) -> Any:
    """Build a (randomly initialised) model from a config object or dict."""
    config = config_from_dict(config)
    type_name = str(getattr(config, "type", DEFAULT_TYPE))
    return model_type(type_name).builder(config)


def create_model(name_or_path: str | Path, **overrides: Any) -> Any:
    """Build a model from a preset name or a YAML/JSON path, with overrides.

    ``clip_weights=PATH_OR_HUB_NAME`` loads pretrained CLIP weights into the model's open_clip towers
    (strictly, see :func:`~mfclip.models.weights.load_clip_weights_into`) and logs what was loaded;
    ``backbone_weights=PATH_OR_HUB_NAME`` loads pretrained timm weights into a ``timm_cnn`` model
    (strictly, see :func:`~mfclip.models.baselines.load_backbone_weights_into`).
    """
    clip_weights = overrides.pop("clip_weights", None)
    backbone_weights = overrides.pop("backbone_weights", None)
    model = model_from_config(get_model_config(name_or_path, **overrides))
    if clip_weights:
        from mfclip.models.weights import load_clip_weights_into

        report = load_clip_weights_into(model, clip_weights)
        logger.info("%s", report.summary())
    if backbone_weights:
        from mfclip.models.baselines import load_backbone_weights_into

        load_backbone_weights_into(model, backbone_weights)
    return model


# ---- summaries (used by `mfclip models`) ---------------------------------------------------------------
def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def model_summary(name_or_path: str | Path) -> dict[str, Any]:
    """Name, type, image size, parameter counts (total and inference path) and description of a preset.

    The model is built on the ``meta`` device where its builder allows, so nothing is allocated.
    """
    import torch

    config = get_model_config(name_or_path)
    try:
        with torch.device("meta"):
            model = model_from_config(config)
    except (NotImplementedError, RuntimeError):  # a builder that needs real tensors
        model = model_from_config(config)
    return {
        "name": str(getattr(config, "name", None) or name_or_path),
        "type": str(getattr(config, "type", DEFAULT_TYPE)),
        "image_size": int(getattr(config, "image_size", 0)),
        "params": count_parameters(model),
        "inference_params": count_parameters(model.inference_module()),
        "description": str(getattr(config, "description", "") or ""),
    }


def config_yaml(config: StrictConfig) -> str:
    """A config as YAML text, keys in declaration order."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=None)

"""What a checkpoint says about how its model was trained: :class:`CheckpointMetadata`.

The metadata is typed and validated on save and on load (``config.json``'s ``metadata``): a misspelt key
is an error, not a value silently ignored. Free-form values go under ``extra``. How images must be
prepared for the model is not metadata: it is the model's input contract (``model.config.input``, see
:mod:`mfclip.inputs`).

Checkpoints of format version 1 (written before the metadata was typed) load with these rules: known keys
are read as below, a ``protocol`` given as a name becomes ``{"name": ...}`` (a top-level ``variant`` joins
it), a ``prompt_set`` name becomes ``{"name": ...}``, ``transform`` moves into the model's input contract
(see :func:`upgrade_legacy_document`), and every other key is kept under ``extra``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from mfclip.prompts import PromptSet, load_prompt_set
from mfclip.utils.config import ConfigError, StrictConfig

__all__ = [
    "CheckpointMetadata",
    "MetadataError",
    "PromptSetInfo",
    "ProtocolInfo",
    "upgrade_legacy_document",
]

MetricValue = float | None
Metrics = dict[str, MetricValue | dict[str, MetricValue]]


class MetadataError(ConfigError):
    """Checkpoint metadata that does not validate; the message names the field."""


class ProtocolInfo(StrictConfig):
    """The protocol a model was trained under: its name, the variant and the file it came from."""

    name: str
    variant: str | None = None
    source: str | None = None


class PromptSetInfo(StrictConfig):
    """The prompt set of training: its name (or path) and its content, so it travels with the model."""

    name: str = "default"
    #: The prompt set's YAML content as loaded at training time; ``None`` for older checkpoints.
    definition: dict[str, Any] | None = None

    @classmethod
    def of(cls, name_or_path: str) -> PromptSetInfo:
        """The info of a bundled prompt set name or a YAML path, with its content read now."""
        prompts = load_prompt_set(str(name_or_path))
        return cls(name=str(name_or_path), definition=prompts.to_dict())

    def load(self) -> PromptSet:
        """The prompt set itself: from the recorded content, else by name (a bundled set or a path)."""
        if self.definition is not None:
            return PromptSet.from_dict(self.definition, source=f"checkpoint prompt set {self.name!r}")
        return load_prompt_set(self.name)


class CheckpointMetadata(StrictConfig):
    """How a checkpoint's model was trained and how it scored.

    All fields are optional. ``metrics`` maps a metric to a number, or a test set (``val``, a test-set
    name) to ``{metric: number}``. ``synthetic`` says the training data was the synthetic benchmark (the
    model card and the server then warn). ``extra`` holds any other JSON values.
    """

    name: str | None = None
    datasets: list[str] = Field(default_factory=list)
    synthetic: bool = False
    protocol: ProtocolInfo | None = None
    prompt_set: PromptSetInfo | None = None
    metrics: Metrics = Field(default_factory=dict)
    train_manifest: str | None = None
    val_manifest: str | None = None
    train_rows: int | None = Field(default=None, ge=0)
    val_rows: int | None = Field(default=None, ge=0)
    epochs: int | None = Field(default=None, ge=0)
    global_step: int | None = Field(default=None, ge=0)
    seed: int | None = None
    selection: str | None = None
    run_dir: str | None = None
    clip_weights: str | None = None
    #: The Hugging Face Hub licence identifier of the model card (``mfclip push``).
    license: str | None = None
    notes: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("protocol", "prompt_set", mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("datasets", mode="before")
    @classmethod
    def _one_dataset(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("metrics")
    @classmethod
    def _finite_or_none(cls, metrics: Metrics) -> Metrics:
        def clean(value: MetricValue) -> MetricValue:
            return None if value is None or not math.isfinite(value) else float(value)

        return {
            key: {k: clean(v) for k, v in value.items()} if isinstance(value, dict) else clean(value)
            for key, value in metrics.items()
        }

    @field_validator("extra")
    @classmethod
    def _json_values(cls, extra: dict[str, Any]) -> dict[str, Any]:
        return {str(key): _jsonable(value, f"extra.{key}") for key, value in extra.items()}

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def coerce(
        cls, value: CheckpointMetadata | Mapping[str, Any] | None, source: str = "metadata"
    ) -> CheckpointMetadata:
        """``value`` as metadata: itself, a validated mapping (unknown keys are errors), or empty."""
        if value is None:
            return cls()
        if isinstance(value, CheckpointMetadata):
            return value
        if not isinstance(value, Mapping):
            raise MetadataError(f"{source}: expected a mapping, got {type(value).__name__}")
        data = {str(key): _jsonable(item, f"{source}.{key}") for key, item in value.items()}
        try:
            return cls.from_dict(data, source=source)
        except ConfigError as exc:
            hint = "; put free-form values under 'extra'" if "unknown key" in str(exc) else ""
            raise MetadataError(f"{exc}{hint}") from None

    @classmethod
    def from_legacy(cls, value: Mapping[str, Any], source: str = "metadata") -> CheckpointMetadata:
        """Read the free-form metadata of a format-1 checkpoint or a Lightning file (see the module doc)."""
        data = {str(key): item for key, item in dict(value).items()}
        data.pop("transform", None)  # the input contract now lives in the model config
        known: dict[str, Any] = {}
        stored_extra = data.pop("extra", None)
        extra: dict[str, Any] = dict(stored_extra) if isinstance(stored_extra, Mapping) else {}
        protocol = data.pop("protocol", None)
        variant = data.pop("variant", None)
        if isinstance(protocol, str):
            protocol = {"name": protocol}
        if isinstance(protocol, Mapping) and variant is not None and protocol.get("variant") is None:
            protocol = {**protocol, "variant": variant}
        elif variant is not None:
            extra["variant"] = variant
        if protocol is not None:
            known["protocol"] = protocol
        for key, item in data.items():
            if key in cls.model_fields:
                known[key] = item
            else:
                extra[key] = item
        # A value of the wrong type in an old file is kept as extra rather than refusing the checkpoint.
        for key in list(known):
            try:
                cls.from_dict({key: known[key]})
            except ConfigError:
                extra[key] = known.pop(key)
        return cls.coerce({**known, "extra": extra}, source=source)

    # ---- reading -----------------------------------------------------------------------------------
    def prompts(self) -> PromptSet:
        """The prompt set the model was trained with (the bundled ``default`` when none is recorded)."""
        return (self.prompt_set or PromptSetInfo()).load()

    @property
    def is_synthetic(self) -> bool:
        """Trained on the synthetic benchmark: the flag, or a dataset name containing "synth"."""
        return self.synthetic or any("synth" in d.lower() for d in self.datasets)

    def card_dict(self) -> dict[str, Any]:
        """The metadata as the model card reads it: fields that are set, ``extra`` merged in."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data.pop("extra", None)
        if self.prompt_set is not None:
            data["prompt_set"] = self.prompt_set.name  # the name; the content would swamp the card
        if self.train_manifest or self.datasets or self.protocol:
            data["synthetic"] = self.synthetic  # a trained model's card says "synthetic: no" too
        return {**self.extra, **data}


def upgrade_legacy_document(document: dict[str, Any]) -> dict[str, Any]:
    """A format-1 ``config.json`` in today's form: its metadata's ``transform`` becomes the model's
    input contract (``model.input``) when the model config has none. Returns the same dict."""
    metadata = document.get("metadata")
    model = document.get("model")
    if not isinstance(metadata, dict) or not isinstance(model, dict):
        return document
    recorded = metadata.get("transform")
    if isinstance(recorded, dict) and "input" not in model:
        model["input"] = {k: recorded[k] for k in ("resize", "interpolation") if k in recorded}
    return document


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON values (Paths, numpy and tensor scalars, configs converted); others rejected."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, StrictConfig):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)  # numpy and tensor scalars
    if callable(item) and getattr(value, "shape", None) in ((), (1,)):
        return item()
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict(), where)
    raise MetadataError(f"{where}: {type(value).__name__} is not JSON-serialisable")

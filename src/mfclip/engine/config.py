"""The training configuration: one typed tree loaded from a YAML preset plus ``key=value`` overrides.

Sections: ``model`` (which detector), ``data`` (which rows, how they are loaded), ``optim`` (Adam, learning
rates, step decay), ``trainer`` (Lightning settings: epochs, precision, devices, checkpoints, early stopping),
``logging`` (TensorBoard, CSV, W&B, MLflow) and ``output`` (the run directory). Presets live in
``configs/train/*.yaml``; every key is documented in ``docs/training.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from mfclip.data.transforms import AugmentConfig
from mfclip.inputs import FaceCropConfig, Interpolation, ResizeMode
from mfclip.utils.config import ConfigError, StrictConfig, apply_overrides, closest, load_yaml

TRAIN_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "configs" / "experiments"

PositiveInt = Annotated[int, Field(ge=1)]
Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
# A fraction of the batches (float) or a number of batches (int), as Lightning's limit_* options take.
BatchLimit = Annotated[float, Field(ge=0.0, le=1.0)] | Annotated[int, Field(ge=0)]


class ModelSection(StrictConfig):
    """Which detector to train.

    ``name`` is a model preset (``mfclip models list``) or a model YAML/JSON file; ``overrides`` change keys
    of that config (nested mapping or dotted keys, e.g. ``{"spa.mode": "matrix"}``); ``clip_weights`` loads
    pretrained CLIP weights (a local file or directory, see docs/weights.md) into the CLIP towers before
    training; ``backbone_weights`` loads pretrained timm weights (ImageNet) into a ``timm_cnn`` model.
    """

    name: str = "mfclip-vit-b16"
    overrides: dict[str, Any] = Field(default_factory=dict)
    clip_weights: str | None = None
    backbone_weights: str | None = None


class DataSection(StrictConfig):
    """Where the training and validation rows come from and how they are loaded.

    Either ``protocol`` (a bundled protocol name or a protocol YAML: its ``train`` and ``val`` selectors pick
    the rows, ``variant`` one of its trainings) or ``manifest`` alone (rows with ``split`` ``train`` and
    ``val``). With a protocol, ``manifest`` replaces the protocol's manifest and ``data_dir`` is the folder
    its manifest paths are relative to. ``root`` is the folder image paths are relative to (default: the
    manifest's folder).

    ``resize``, ``interpolation`` and ``face_crop`` become the trained model's input contract
    (``model.config.input``, saved in its checkpoint and used by evaluation and serving): ``None`` keeps
    the model preset's value; ``face_crop: auto`` reads the crop settings ``mfclip preprocess`` recorded
    beside the training manifest (``preprocess.json``) and otherwise keeps the preset's (none: images
    used as they are); ``off`` records that the images were not face-cropped; a mapping gives the
    settings (:class:`mfclip.inputs.FaceCropConfig`).
    """

    manifest: str | None = None
    root: str | None = None
    protocol: str | None = None
    variant: str | None = None
    data_dir: str | None = None
    prompt_set: str = "default"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    resize: ResizeMode | None = None
    interpolation: Interpolation | None = None
    face_crop: Literal["auto", "off"] | FaceCropConfig = "auto"
    batch_size: PositiveInt = 24
    eval_batch_size: PositiveInt | None = None
    num_workers: Annotated[int, Field(ge=0)] = 4
    sampling: Literal["shuffle", "balanced", "balanced_generators"] = "shuffle"
    max_corrupt: Annotated[int, Field(ge=0)] | None = None
    max_corrupt_fraction: Annotated[float, Field(ge=0.0, le=1.0)] | None = 0.01
    drop_invalid: bool = False
    check_files: bool = True
    synthetic: bool | None = None

    @model_validator(mode="after")
    def _has_source(self) -> DataSection:
        if self.variant is not None and self.protocol is None:
            raise ValueError("data.variant needs data.protocol")
        return self

    @property
    def val_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size


class OptimSection(StrictConfig):
    """Adam (or AdamW) with two parameter groups and a step decay.

    The pretrained CLIP towers train at ``lr_pretrained``, everything else at ``lr``. The learning rate is
    multiplied by ``gamma`` every ``step_size_epochs`` epochs; ``warmup_steps`` ramps it up linearly over the
    first optimizer steps.
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-4
    lr_pretrained: Annotated[float, Field(ge=0)] = 1e-5
    weight_decay: Annotated[float, Field(ge=0)] = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    step_size_epochs: PositiveInt = 15
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    warmup_steps: Annotated[int, Field(ge=0)] = 0

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must lie in [0, 1), got {list(value)}")
        return value


class EarlyStoppingSection(StrictConfig):
    """Stop when ``val/auc`` has not improved by ``min_delta`` for ``patience`` validations."""

    patience: PositiveInt = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class TrainerSection(StrictConfig):
    """Lightning ``Trainer`` settings, checkpointing and early stopping."""

    max_epochs: int = 30
    max_steps: int = -1
    precision: Precision = "32-true"
    accumulate_grad_batches: PositiveInt = 1
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: PositiveInt = 1
    strategy: str = "auto"
    sync_batchnorm: bool = False
    matmul_precision: Literal["highest", "high", "medium"] = "high"
    deterministic: bool | Literal["warn"] = False
    seed: int = 0
    val_check_interval: BatchLimit = 1.0
    check_val_every_n_epoch: PositiveInt | None = 1
    limit_train_batches: BatchLimit = 1.0
    limit_val_batches: BatchLimit = 1.0
    num_sanity_val_steps: int = 2
    log_every_n_steps: PositiveInt = 50
    gradient_clip_val: Annotated[float, Field(gt=0)] | None = None
    checkpoint_every_n_steps: PositiveInt | None = None
    # earlier last.ckpt files kept as checkpoints/step-N.ckpt (hard links), for when last.ckpt is damaged
    keep_step_checkpoints: Annotated[int, Field(ge=0)] = 1
    export_best_on_improvement: bool = True
    early_stopping: EarlyStoppingSection | None = None
    progress_bar: bool = True

    @model_validator(mode="after")
    def _has_end(self) -> TrainerSection:
        if self.max_epochs < 0 and self.max_steps < 0:
            raise ValueError("set trainer.max_epochs or trainer.max_steps: training would never end")
        if self.max_epochs == 0 or self.max_steps == 0:
            raise ValueError("trainer.max_epochs and trainer.max_steps must not be 0 (use -1 for no limit)")
        return self


class LoggingSection(StrictConfig):
    """Experiment loggers; files go under ``RUN/logs``. W&B and MLflow need their packages installed."""

    tensorboard: bool = True
    csv: bool = True
    wandb: bool = False
    wandb_project: str = "mfclip"
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None
    experiment_name: str = "mfclip"


class OutputSection(StrictConfig):
    """Where the run directory goes: ``run_dir``, else ``ROOT/<name>-<timestamp>``.

    ``name`` defaults to the model name, plus the protocol and variant when there are any.
    """

    run_dir: str | None = None
    root: str = "runs"
    name: str | None = None


class TrainConfig(StrictConfig):
    """A complete training run."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    output: OutputSection = Field(default_factory=OutputSection)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, allow_unicode=True)


def list_train_presets() -> list[str]:
    """Names of the bundled training presets (``configs/train/*.yaml``)."""
    return sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))


def list_experiments() -> list[str]:
    """Names of the bundled experiment presets (``configs/experiments/*.yaml``)."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def bundled_experiment(name: str) -> Path | None:
    """The YAML file of an experiment preset (``NAME`` or ``experiments/NAME``), or None."""
    path = EXPERIMENTS_DIR / f"{name.removeprefix('experiments/')}.yaml"
    return path if path.is_file() else None


def train_preset_path(name_or_path: str | Path) -> Path:
    """The YAML file of a bundled preset name, or the given path when it is a file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    bundled = TRAIN_CONFIG_DIR / f"{text}.yaml"
    if bundled.is_file():
        return bundled
    experiment = bundled_experiment(text)
    if experiment is not None:
        return experiment
    if text.endswith((".yaml", ".yml")) or ("/" in text and not text.startswith("experiments/")):
        raise ConfigError(f"{text}: training config file not found")
    presets = list_train_presets()
    hint = closest(text, [*presets, *list_experiments()])
    suggestion = f"; did you mean {hint!r}?" if hint else ""
    raise ConfigError(
        f"unknown training preset {text!r}{suggestion} Bundled presets: {', '.join(presets)}; "
        "experiment presets: `mfclip compare --list`"
    )


def load_train_config(
    name_or_path: str | Path | Mapping[str, Any] = "default", overrides: Iterable[str] = ()
) -> TrainConfig:
    """A preset name, a YAML path or a mapping, with dotted ``key=value`` overrides applied, validated."""
    if isinstance(name_or_path, Mapping):
        data, source = dict(name_or_path), "training config"
    else:
        path = train_preset_path(name_or_path)
        data, source = load_yaml(path), str(path)
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    if overrides:
        source += f" (with overrides {' '.join(overrides)})"
    return TrainConfig.from_dict(data, source=source)

"""Train a detector: ``train(config) -> TrainResult``, and the ``mfclip train`` entry point.

One call builds the model, the data and a Lightning ``Trainer`` from a :class:`TrainConfig`, writes the run
directory (see :mod:`mfclip.engine.runinfo`), trains with checkpoints (``last.ckpt`` periodically and at
every epoch end, ``best.ckpt`` by validation AUC), and exports the best model as an mfclip checkpoint
directory ``RUN/best``. ``train(config, resume=RUN)`` continues an interrupted run exactly where its last
checkpoint left it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfclip.engine import runinfo
from mfclip.engine.config import TrainConfig, load_train_config
from mfclip.engine.distributed import is_launch_rank_zero
from mfclip.utils.config import ConfigError
from mfclip.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

MONITOR = "val/auc"


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``run_dir`` holds the checkpoints to resume from."""

    def __init__(self, run_dir: Path, global_step: int) -> None:
        super().__init__(f"training interrupted at step {global_step}; resume with --resume {run_dir}")
        self.run_dir = run_dir
        self.global_step = global_step


@dataclass
class TrainResult:
    """The outcome of one training run.

    ``best_checkpoint_dir`` is the mfclip checkpoint directory of the best-val-AUC model (``RUN/best``, load
    it with ``mfclip.models.checkpoint.load_checkpoint``), None when validation never ran.
    """

    run_dir: Path
    best_checkpoint_dir: Path | None
    best_val_auc: float | None
    best_epoch: int | None
    best_step: int | None
    best_val_metrics: dict[str, float]
    last_val_metrics: dict[str, float]
    last_checkpoint: Path | None
    best_lightning_checkpoint: Path | None
    global_step: int
    epochs: int
    status: str
    variant: str | None
    config: TrainConfig
    stopped_early: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Run directories and resuming
# ---------------------------------------------------------------------------------------------------


def run_name(config: TrainConfig) -> str:
    """``output.name``, else the model name plus the protocol and variant."""
    if config.output.name:
        return runinfo.slug(config.output.name)
    parts = [Path(config.model.name).stem]
    if config.data.protocol:
        parts.append(Path(config.data.protocol).stem)
    if config.data.variant:
        parts.append(config.data.variant)
    return runinfo.slug("-".join(parts))


def new_run_dir(config: TrainConfig) -> Path:
    """``output.run_dir``, else a fresh ``output.root/<name>-<timestamp>`` (suffixed if taken)."""
    if config.output.run_dir:
        return Path(config.output.run_dir)
    base = Path(config.output.root) / f"{run_name(config)}-{runinfo.timestamp()}"
    candidate, counter = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{counter}")
        counter += 1
    return candidate


@dataclass
class ResumePoint:
    """A Lightning checkpoint to continue from, and the run directory it belongs to (if known)."""

    checkpoint: Path
    run_dir: Path | None


def resolve_resume(resume: str | Path, resume_from: str | None = None) -> ResumePoint:
    """``RUN`` (its ``checkpoints/last.ckpt``, or the one ``resume_from`` names: ``best``, ``step-N``) or a
    ``.ckpt`` file, checked before use: a missing, truncated, modified or unsafe checkpoint is one error line
    naming the file and, in a run directory, the newest readable checkpoint to resume from instead."""
    from mfclip.engine.checkpoints import checkpoint_problem, resume_checkpoint

    path = Path(resume)
    if path.is_dir():
        if not (path / runinfo.CHECKPOINT_DIR).is_dir():
            raise ConfigError(f"{path}: no {runinfo.CHECKPOINT_DIR}/ folder to resume from")
        return ResumePoint(resume_checkpoint(path, resume_from), path)
    if resume_from is not None:
        raise ConfigError(
            f"--resume-from {resume_from} picks a checkpoint of a run directory; {path} is not one"
        )
    if path.is_file():
        run_dir = path.parent.parent
        in_run = path.parent.name == runinfo.CHECKPOINT_DIR and (run_dir / runinfo.CONFIG_FILE).is_file()
        name = _checkpoint_name(path) if in_run else None
        if name is not None:
            return ResumePoint(resume_checkpoint(run_dir, name), run_dir)
        problem = checkpoint_problem(path)
        if problem is not None:
            raise ConfigError(problem)
        return ResumePoint(path, run_dir if in_run else None)
    raise ConfigError(f"{path}: no such run directory or checkpoint file to resume from")


def _checkpoint_name(path: Path) -> str | None:
    """The ``--resume-from`` name of a checkpoint file of a run (last, best, step-N), if it has one."""
    from mfclip.engine.checkpoints import STEP_PATTERN

    if STEP_PATTERN.match(path.name):
        return path.stem
    return {runinfo.LAST_CHECKPOINT: "last", runinfo.BEST_CHECKPOINT: "best"}.get(path.name)


def config_from_checkpoint(checkpoint: Path) -> TrainConfig:
    """The training config recorded in a Lightning checkpoint's hyper-parameters."""
    from mfclip.models.checkpoint import read_torch_file

    payload = read_torch_file(checkpoint)
    hyper = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    data = hyper.get("train_config") if isinstance(hyper, dict) else None
    if not data:
        raise ConfigError(f"{checkpoint}: records no training config; pass one with --config")
    return TrainConfig.from_dict(data, source=f"{checkpoint} (hyper-parameters)")


# ---------------------------------------------------------------------------------------------------
# Building the pieces
# ---------------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, load_clip_weights: bool = True, rows: Any = None) -> Any:
    """The detector ``config.model`` describes, with its pretrained weights (``model.clip_weights``,
    ``model.backbone_weights``) loaded unless told otherwise (a resumed run restores its own).

    With the training ``rows``, the model's input contract is the one training on them records
    (``data.resize``, ``data.interpolation``, ``data.face_crop``; see ``docs/training.md``).
    """
    from mfclip.models.registry import create_model

    overrides = dict(config.model.overrides)
    if rows is not None:
        overrides["input"] = input_contract_for(config, rows).to_dict()
    model = create_model(config.model.name, **overrides)
    if load_clip_weights and config.model.clip_weights:
        from mfclip.models.weights import load_clip_weights_into

        report = load_clip_weights_into(model, config.model.clip_weights)
        logger.info("%s", report.summary())
    if load_clip_weights and config.model.backbone_weights:
        from mfclip.models.baselines import load_backbone_weights_into

        load_backbone_weights_into(model, config.model.backbone_weights)
    return model


def input_contract_for(config: TrainConfig, rows: Any) -> Any:
    """The :class:`~mfclip.inputs.InputConfig` a model trained by ``config`` on ``rows`` records."""
    from mfclip.engine.datamodule import resolve_input_contract
    from mfclip.inputs import input_contract
    from mfclip.models.registry import get_model_config

    preset = get_model_config(config.model.name, **dict(config.model.overrides))
    return resolve_input_contract(config.data, rows, input_contract(preset)[1])


def check_config(config: TrainConfig) -> None:
    """Raise the errors training would raise on ``config``'s protocol and model, without data or weights."""
    from mfclip.engine.datamodule import resolve_protocol
    from mfclip.models.registry import get_model_config

    resolve_protocol(config.data)
    model_config = get_model_config(config.model.name, **dict(config.model.overrides))
    kind = getattr(model_config, "type", None)
    if config.model.backbone_weights and kind != "timm_cnn":
        raise ConfigError(
            f"model.backbone_weights: only timm_cnn models take timm weights, {config.model.name!r} is "
            f"{kind!r} (CLIP towers load model.clip_weights)"
        )


def build_loggers(config: TrainConfig, run_dir: Path) -> list[Any]:
    """The loggers ``config.logging`` enables, writing under ``RUN/logs``."""
    from lightning.pytorch import loggers

    log_dir = run_dir / runinfo.LOG_DIR
    options = config.logging
    result: list[Any] = []
    if options.tensorboard:
        result.append(
            loggers.TensorBoardLogger(str(log_dir), name="tensorboard", version="", default_hp_metric=False)
        )
    if options.csv:
        result.append(loggers.CSVLogger(str(log_dir), name="csv", version=""))
    if options.wandb:
        _require("wandb", "logging.wandb")
        result.append(
            loggers.WandbLogger(
                project=options.wandb_project,
                name=run_dir.name,
                id=runinfo.slug(run_dir.name),
                save_dir=str(log_dir),
                resume="allow",
            )
        )
    if options.mlflow:
        _require("mlflow", "logging.mlflow")
        uri = options.mlflow_tracking_uri or (log_dir / "mlruns").resolve().as_uri()
        result.append(
            loggers.MLFlowLogger(
                experiment_name=options.experiment_name, run_name=run_dir.name, tracking_uri=uri
            )
        )
    return result


def _require(package: str, option: str) -> None:
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"{option} is on but the {package!r} package is not installed: pip install {package}"
        )


def build_trainer(config: TrainConfig, run_dir: Path, callbacks: list[Any], loggers: list[Any]) -> Any:
    """The Lightning ``Trainer`` of ``config.trainer``: atomic checkpoint files, our own data sharding."""
    import lightning as L

    from mfclip.engine.callbacks import AtomicCheckpointIO

    options = config.trainer
    return L.Trainer(
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        precision=options.precision,
        max_epochs=options.max_epochs,
        max_steps=options.max_steps,
        accumulate_grad_batches=options.accumulate_grad_batches,
        gradient_clip_val=options.gradient_clip_val,
        deterministic=options.deterministic,
        val_check_interval=options.val_check_interval,
        check_val_every_n_epoch=options.check_val_every_n_epoch,
        limit_train_batches=options.limit_train_batches,
        limit_val_batches=options.limit_val_batches,
        num_sanity_val_steps=options.num_sanity_val_steps,
        log_every_n_steps=options.log_every_n_steps,
        sync_batchnorm=options.sync_batchnorm,
        enable_progress_bar=options.progress_bar,
        enable_model_summary=options.progress_bar,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        # The data module shards the data itself (one global order, resumable mid-epoch).
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )


def _model_metadata(
    config: TrainConfig, rows: Any, run_dir: Path, metrics: dict[str, float], epoch: int, step: int
) -> Any:
    from mfclip.models.metadata import CheckpointMetadata, PromptSetInfo, ProtocolInfo

    protocol = None
    if rows.protocol is not None:
        protocol = ProtocolInfo(name=rows.protocol.name, variant=rows.variant, source=rows.protocol.source)
    val = {key.split("/", 1)[1]: float(value) for key, value in metrics.items() if key.startswith("val/")}
    return CheckpointMetadata(
        name=run_name(config),
        train_manifest=str(rows.train_manifest),
        val_manifest=str(rows.val_manifest),
        datasets=rows.datasets,
        protocol=protocol,
        prompt_set=PromptSetInfo.of(config.data.prompt_set),
        metrics={"val": val},
        synthetic=rows.synthetic,
        epochs=epoch,
        global_step=step,
        seed=config.trainer.seed,
        selection="best val/auc on the source-domain validation rows",
        run_dir=str(run_dir),
        train_rows=len(rows.train),
        val_rows=len(rows.val),
        clip_weights=config.model.clip_weights,
    )


@contextlib.contextmanager
def _keep_sigint_handler() -> Iterator[None]:
    """Lightning ignores SIGINT after a Ctrl-C; put the previous handler back afterwards."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    resume_from: str | None = None,
    callbacks: Sequence[Any] = (),
    argv: list[str] | None = None,
) -> TrainResult:
    """Train one model as ``config`` says and return where everything went.

    ``resume``: a run directory (continues from its ``checkpoints/last.ckpt``, writing into it) or a Lightning
    checkpoint file; ``resume_from`` picks another checkpoint of the run directory (``best``, ``step-N``).
    The checkpoint is checked before training starts (see :func:`resolve_resume`). ``callbacks``: extra
    Lightning callbacks. A protocol with variants needs
    ``config.data.variant`` (or use :func:`train_variants`). Ctrl-C raises :class:`TrainingInterrupted`
    after the run directory records it; finished checkpoints are never lost.
    """
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from mfclip.engine.callbacks import BestModelExport, LastCheckpoint, ResumeState
    from mfclip.engine.datamodule import DetectorDataModule, resolve_protocol, resolve_rows
    from mfclip.engine.module import DetectorModule
    from mfclip.models.checkpoint import save_checkpoint

    protocol = resolve_protocol(config.data)
    if protocol is not None and config.data.variant is None and protocol.variants:
        raise ConfigError(
            f"protocol {protocol.name!r} defines variants {sorted(protocol.variants)}: set data.variant "
            "(--variant) or train them all with train_variants() / `mfclip train` without --variant"
        )
    resume_point = resolve_resume(resume, resume_from) if resume is not None else None
    if resume_point is not None and resume_point.run_dir is not None:
        run_dir = resume_point.run_dir
    else:
        run_dir = new_run_dir(config)
    rank_zero = is_launch_rank_zero()
    checkpoint_dir = run_dir / runinfo.CHECKPOINT_DIR
    last_path = checkpoint_dir / runinfo.LAST_CHECKPOINT
    if rank_zero and resume_point is None and last_path.exists():
        raise ConfigError(f"{run_dir} already holds a training run; resume it with --resume {run_dir}")

    seed = config.trainer.seed
    L.seed_everything(seed, workers=True, verbose=False)
    rows = resolve_rows(config.data)
    model = build_model(config, load_clip_weights=resume_point is None, rows=rows)
    started, started_utc = time.time(), runinfo.utc_now()
    if rank_zero:
        runinfo.write_run_files(
            run_dir, config.to_yaml(), seed, rows.describe(), argv, resumed=resume_point is not None
        )
        runinfo.write_summary(run_dir, {"status": "running", "started_utc": started_utc})

    import torch

    accelerator = config.trainer.accelerator
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_cuda:
        # TF32 tensor cores for float32 matrix products ("high"), as CLIP trainers do.
        torch.set_float32_matmul_precision(config.trainer.matmul_precision)
    pin_memory = on_cuda
    datamodule = DetectorDataModule(config.data, model, seed=seed, rows=rows, pin_memory=pin_memory)
    module = DetectorModule(model, config.optim, train_config=config.to_dict())

    best_dir = run_dir / runinfo.BEST_DIR

    def export(pl_module: Any, metrics: dict[str, float]) -> None:
        trainer = pl_module.trainer
        metadata = _model_metadata(
            config, rows, run_dir, metrics, trainer.current_epoch + 1, int(trainer.global_step)
        )
        save_checkpoint(pl_module.model, best_dir, metadata)

    best_export = BestModelExport(
        export if config.trainer.export_best_on_improvement else _no_export, MONITOR
    )
    best_checkpoint = ModelCheckpoint(
        dirpath=str(checkpoint_dir),
        filename=Path(runinfo.BEST_CHECKPOINT).stem,
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )
    all_callbacks: list[Any] = [
        ResumeState(datamodule.position),
        best_export,
        LastCheckpoint(
            last_path, config.trainer.checkpoint_every_n_steps, config.trainer.keep_step_checkpoints
        ),
        best_checkpoint,
    ]
    early = config.trainer.early_stopping
    if early is not None:
        all_callbacks.append(
            EarlyStopping(
                monitor=MONITOR,
                mode="max",
                patience=early.patience,
                min_delta=early.min_delta,
                check_on_train_epoch_end=False,
            )
        )
    loggers = build_loggers(config, run_dir)
    if loggers:
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    all_callbacks.extend(callbacks)

    with _quiet_known_warnings():
        trainer = build_trainer(config, run_dir, all_callbacks, loggers)

    status, error = "completed", None
    ckpt_path = str(resume_point.checkpoint) if resume_point is not None else None
    try:
        with _keep_sigint_handler(), _quiet_known_warnings():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown followed by sys.exit(1).
        if not trainer.interrupted:
            raise
        status = "interrupted"
    except BaseException as exc:
        status, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), repr(exc)
        if rank_zero:
            _write_summary(
                run_dir, trainer, best_checkpoint, best_export, status, error, started, started_utc, ckpt_path
            )
        if isinstance(exc, MisconfigurationException):  # e.g. resuming past max_epochs
            raise ConfigError(f"{run_dir}: {exc}") from None
        raise

    best_ckpt = Path(best_checkpoint.best_model_path) if best_checkpoint.best_model_path else None
    exported: Path | None = None
    if status == "completed" and trainer.is_global_zero and best_ckpt is not None and best_ckpt.is_file():
        exported = _export_best(best_ckpt, best_dir, config, rows, run_dir, best_export)
    elif status == "completed" and best_dir.is_dir():
        exported = best_dir
    summary = {}
    if rank_zero:
        summary = _write_summary(
            run_dir, trainer, best_checkpoint, best_export, status, error, started, started_utc, ckpt_path
        )
    if status == "interrupted":
        raise TrainingInterrupted(run_dir, int(trainer.global_step))
    early_stop = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint_dir=exported if exported is not None else (best_dir if best_dir.is_dir() else None),
        best_val_auc=best_export.best,
        best_epoch=best_export.best_epoch,
        best_step=best_export.best_step,
        best_val_metrics=dict(best_export.best_metrics),
        last_val_metrics=_val_metrics(trainer),
        last_checkpoint=last_path if last_path.is_file() else None,
        best_lightning_checkpoint=best_ckpt,
        global_step=int(trainer.global_step),
        epochs=int(trainer.current_epoch),
        status=status,
        variant=config.data.variant,
        config=config,
        stopped_early=bool(early_stop is not None and early_stop.stopped_epoch > 0),
        summary=summary,
    )


def _no_export(pl_module: Any, metrics: dict[str, float]) -> None:
    """Export nothing on improvement (``trainer.export_best_on_improvement: false``)."""


def _val_metrics(trainer: Any) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def _export_best(
    best_ckpt: Path, best_dir: Path, config: TrainConfig, rows: Any, run_dir: Path, best_export: Any
) -> Path:
    """Write ``RUN/best`` from the best Lightning checkpoint, with the metrics of that validation."""
    from mfclip.models.checkpoint import load_checkpoint, save_checkpoint

    model, info = load_checkpoint(best_ckpt)
    recorded_epoch = int(info.extra.get("epoch", 0)) + 1  # Lightning counts epochs from 0
    epoch = best_export.best_epoch if best_export.best_epoch is not None else recorded_epoch
    step = best_export.best_step if best_export.best_step is not None else int(info.global_step or 0)
    metrics = dict(best_export.best_metrics)
    metadata = _model_metadata(config, rows, run_dir, metrics, epoch, step)
    return save_checkpoint(model, best_dir, metadata)


def _write_summary(
    run_dir: Path,
    trainer: Any,
    best_checkpoint: Any,
    best_export: Any,
    status: str,
    error: str | None,
    started: float,
    started_utc: str,
    resumed_from: str | None,
) -> dict[str, Any]:
    def relative(path: Path | str | None) -> str | None:
        if not path:
            return None
        path = Path(path)
        try:
            return str(path.resolve().relative_to(run_dir.resolve()))
        except ValueError:
            return str(path)

    last = run_dir / runinfo.CHECKPOINT_DIR / runinfo.LAST_CHECKPOINT
    best_dir = run_dir / runinfo.BEST_DIR
    summary = {
        "status": status,
        "error": error,
        "started_utc": started_utc,
        "finished_utc": runinfo.utc_now(),
        "elapsed_s": round(time.time() - started, 3),
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "world_size": int(trainer.world_size),
        "best_val_auc": best_export.best,
        "best_epoch": best_export.best_epoch,
        "best_step": best_export.best_step,
        "best_val_metrics": dict(best_export.best_metrics),
        "last_val_metrics": _val_metrics(trainer),
        "best_checkpoint": relative(best_checkpoint.best_model_path),
        "last_checkpoint": relative(last) if last.is_file() else None,
        "best_dir": relative(best_dir) if best_dir.is_dir() else None,
        "resumed_from": resumed_from,
        "corrupt_files": _corrupt_files(trainer),
    }
    runinfo.write_summary(run_dir, summary)
    return summary


def _corrupt_files(trainer: Any) -> dict[str, Any]:
    """Unreadable images skipped while training: how many, and each once per dataset with its reason."""
    datamodule = getattr(trainer, "datamodule", None)
    listed = datamodule.corrupt_files() if hasattr(datamodule, "corrupt_files") else {}
    count = sum(len(files) for files in listed.values())
    if count:
        logger.warning("%d unreadable image(s) were skipped; listed in %s", count, runinfo.SUMMARY_FILE)
    return {"count": count, **listed}


class _LightningNoticeFilter(logging.Filter):
    """Drops Lightning's notices that say nothing about the run: package tips and default-limit echoes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip:") or "=1.0)` was configured so " in message)


@contextlib.contextmanager
def _quiet_known_warnings() -> Iterator[None]:
    """Silence Lightning warnings and notices that do not apply to this engine's set-up."""
    notices = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    notice_filter = _LightningNoticeFilter()
    notices.addFilter(notice_filter)
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        stack.callback(notices.removeFilter, notice_filter)
        # Our loaders resume through ResumeState, which Lightning cannot see.
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
        # Processes share one CPU budget in tests; the worker count is the user's choice.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # A resumed run writes into its own log and checkpoint folders.
        warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        # Frozen towers (the CLIP linear probe) stay in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        # Raised inside Lightning's own batch handling with recent torch versions.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        yield


def train_variants(
    config: TrainConfig, *, callbacks: Sequence[Any] = (), argv: list[str] | None = None
) -> list[TrainResult]:
    """Train every variant of ``config.data.protocol`` (one run directory each, under one parent).

    With ``data.variant`` set, or a protocol without variants, this is ``[train(config)]``.
    """
    from mfclip.engine.datamodule import resolve_protocol

    protocol = resolve_protocol(config.data)
    if protocol is None or config.data.variant is not None or not protocol.variants:
        return [train(config, callbacks=callbacks, argv=argv)]
    parent = new_run_dir(config)
    results = []
    for variant in protocol.variants:
        variant_config = config.model_copy(deep=True)
        variant_config.data.variant = variant
        variant_config.output.run_dir = str(parent / runinfo.slug(variant))
        result = train(variant_config, callbacks=callbacks, argv=argv)
        results.append(result)
        if is_launch_rank_zero():
            atomic_write_json(
                parent / "variants.json",
                [
                    {
                        "variant": r.variant,
                        "run_dir": str(r.run_dir),
                        "status": r.status,
                        "best_val_auc": r.best_val_auc,
                        "best_dir": str(r.best_checkpoint_dir) if r.best_checkpoint_dir else None,
                    }
                    for r in results
                ],
            )
    return results


def compose_config(
    config: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    protocol: str | None = None,
    variant: str | None = None,
    data_dir: str | None = None,
    manifest: str | None = None,
    root: str | None = None,
    out: str | None = None,
    resume: str | Path | None = None,
    resume_from: str | None = None,
) -> TrainConfig:
    """The config ``mfclip train`` would run with (see :func:`train_from_args` for the arguments)."""
    flags = [
        f"{key}={value}"
        for key, value in (
            ("data.protocol", protocol),
            ("data.variant", variant),
            ("data.data_dir", data_dir),
            ("data.manifest", manifest),
            ("data.root", root),
            ("output.run_dir", out),
        )
        if value is not None
    ]
    overrides = [*overrides, *flags]
    if resume is None:
        if resume_from is not None:
            raise ConfigError("--resume-from needs --resume RUN")
        return load_train_config(config if config is not None else "default", overrides)
    point = resolve_resume(resume, resume_from)
    if point.run_dir is not None:
        if config is not None:
            raise ConfigError(
                f"--resume {resume} continues with {point.run_dir / runinfo.CONFIG_FILE}; "
                "drop --config (key=value overrides still apply)"
            )
        if out is not None:
            raise ConfigError("--out cannot move a resumed run: it continues in its own directory")
        return load_train_config(point.run_dir / runinfo.CONFIG_FILE, overrides)
    if config is not None:
        return load_train_config(config, overrides)
    return load_train_config(config_from_checkpoint(point.checkpoint).to_dict(), overrides)


def train_from_args(
    config: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    protocol: str | None = None,
    variant: str | None = None,
    data_dir: str | None = None,
    manifest: str | None = None,
    root: str | None = None,
    resume: str | Path | None = None,
    resume_from: str | None = None,
    out: str | None = None,
    callbacks: Sequence[Any] = (),
    argv: list[str] | None = None,
) -> list[TrainResult]:
    """What ``mfclip train`` does: compose the config, then train (every protocol variant, or one).

    ``config`` is a preset name or YAML path (default ``default``); ``overrides`` are ``key=value`` strings;
    the keyword options set ``data.protocol``, ``data.variant``, ``data.data_dir``, ``data.manifest``,
    ``data.root`` and ``output.run_dir`` (they win over ``overrides``). ``resume`` is a run directory (its
    config.yaml is used, with the overrides) or a Lightning checkpoint (its recorded config unless
    ``config`` is given); ``resume_from`` (``best``, ``step-N``) picks another checkpoint of the run; a
    resumed run trains only its own variant.
    """
    resolved = compose_config(
        config,
        overrides,
        protocol=protocol,
        variant=variant,
        data_dir=data_dir,
        manifest=manifest,
        root=root,
        out=out,
        resume=resume,
        resume_from=resume_from,
    )
    if resume is not None:
        return [train(resolved, resume=resume, resume_from=resume_from, callbacks=callbacks, argv=argv)]
    return train_variants(resolved, callbacks=callbacks, argv=argv)

"""Export a detector's inference path (images (B, 3, S, S) in [0, 1] → P(fake) (B,)) to ONNX or TorchScript.

Both formats keep the batch dimension dynamic. Every export is verified before it is kept: the exported
graph is run (onnxruntime / ``torch.jit.load``) on random images at batch sizes other than the one used
to export, and must match PyTorch within ``atol``. ONNX tries the ``torch.export``-based exporter first
and falls back to the TorchScript-based one if that fails or does not verify.

:func:`load_exported` runs an export (a TorchScript file's code through ``torch.jit.load``): use it on
exports you made or trust. :func:`exported_metadata` runs nothing: it reads ONNX metadata with ``onnx``
and a TorchScript file's ``extra/mfclip.json`` from its zip (:mod:`mfclip.models.readers`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mfclip import __version__
from mfclip.data.transforms import ImageTransform
from mfclip.inputs import InputConfig
from mfclip.models.base import DetectorModel

EXPORT_FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME = "images"
OUTPUT_NAME = "p_fake"
DEFAULT_OPSET = 18
METADATA_FILE = "mfclip.json"  # a TorchScript export's metadata, an extra file of the archive
INPUT_CONTRACT_KEY = "input_contract"


class ExportError(ValueError):
    """The output cannot be written, the model could not be exported, or the export disagrees with PyTorch."""


@dataclass
class ExportResult:
    """Where the export went, how, and how closely it matches PyTorch."""

    path: Path
    format: str
    exporter: str  # "dynamo", "torchscript" (legacy ONNX exporter) or "trace"
    max_abs_diff: float
    checked_batch_sizes: list[int]
    opset: int | None = None
    notes: list[str] = field(default_factory=list)


def _metadata(model: DetectorModel) -> dict[str, str]:
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    return {
        "mfclip_version": __version__,
        "model_name": str(config.get("name") or type(model).__name__),
        "image_size": str(model.image_size),
        # The model's input contract: how to turn a photo into the graph's input (exported_transform).
        INPUT_CONTRACT_KEY: json.dumps(model.input_config.to_dict(), sort_keys=True),
        "input": f"{INPUT_NAME}: float32 (batch, 3, {model.image_size}, {model.image_size}) RGB in [0, 1]",
        "output": f"{OUTPUT_NAME}: float32 (batch,) probability that the image is fake",
    }


def _cpu_module(model: DetectorModel) -> nn.Module:
    """A float32 CPU copy of the model's inference module, in eval mode, gradients off."""
    clone = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    module = clone.inference_module().eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _example(batch: int, size: int, seed: int) -> torch.Tensor:
    """Random images whose grid patches differ in texture, so a wrong patch choice changes the output."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator)
    half = size // 2
    for rows, cols in ((slice(0, half), slice(0, half)), (slice(half, None), slice(half, None))):
        images[:, :, rows, cols] *= torch.rand(batch, 1, 1, 1, generator=generator)
    return images


# Batch sizes every export is checked at: other than the export example's (2), and one large enough to
# cross any per-chunk processing inside the model.
VERIFY_BATCH_SIZES = [1, 3, 70]


def check_output_path(path: Path, suffix: str) -> None:
    """Make sure ``path`` can be written (its folder created if needed) before any export work starts."""
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give a file name such as {path / ('model' + suffix)}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{path}: cannot create the folder {folder} ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise ExportError(f"{path}: cannot write in the folder {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A temporary file in ``path``'s folder; moved onto ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _compare(
    reference: nn.Module, run: Callable[[torch.Tensor], np.ndarray], size: int, batch_sizes: list[int]
) -> float:
    worst = 0.0
    for index, batch in enumerate(batch_sizes):
        images = _example(batch, size, seed=1000 + index)
        with torch.no_grad():
            expected = reference(images).float().numpy()
        got = np.asarray(run(images), dtype=np.float64)
        if got.shape != expected.shape:
            raise ExportError(
                f"exported graph returned shape {got.shape} for batch {batch}, expected {expected.shape}"
            )
        worst = max(worst, float(np.max(np.abs(got - expected))) if expected.size else 0.0)
    return worst


# ----------------------------------------------------------------------------------------------------
# ONNX


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images.numpy().astype(np.float32)})[0]


def _export_onnx_dynamo(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter reports its progress on stdout; keep the command's output to the result.
    with warnings.catch_warnings(), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise ExportError("the dynamo exporter returned no program")
    program.save(str(path), external_data=False)


def _export_onnx_legacy(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
        )


def _add_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_onnx(
    model: DetectorModel,
    path: str | Path,
    opset: int | None = None,
    exporter: str = "auto",
    atol: float = 1e-4,
) -> ExportResult:
    """Export to one self-contained ``.onnx`` file with a dynamic batch dimension, verified with onnxruntime.

    ``exporter``: ``"dynamo"`` (``torch.export``), ``"torchscript"`` (the legacy exporter) or ``"auto"``
    (dynamo, then the legacy exporter if dynamo fails or does not verify).
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"unknown ONNX exporter {exporter!r}; valid: auto, dynamo, torchscript")
    path = Path(path)
    check_output_path(path, SUFFIXES["onnx"])
    opset = int(opset or DEFAULT_OPSET)
    module = _cpu_module(model)
    size = model.image_size
    example = _example(2, size, seed=0)
    batch_sizes = VERIFY_BATCH_SIZES
    attempts = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    failures: list[str] = []
    for name in attempts:
        try:
            with _temporary_beside(path) as tmp:
                export = _export_onnx_dynamo if name == "dynamo" else _export_onnx_legacy
                export(module, example, tmp, opset)
                _add_onnx_metadata(tmp, _metadata(model))
                diff = _compare(module, _onnx_runner(tmp), size, batch_sizes)
                if not diff <= atol:
                    raise ExportError(f"outputs differ from PyTorch by up to {diff:.2e} (tolerance {atol:g})")
            return ExportResult(path, "onnx", name, diff, batch_sizes, opset, notes=failures)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append(f"{name} exporter: {type(exc).__name__}: {first_line}")
    raise ExportError(f"ONNX export of {_metadata(model)['model_name']} failed: " + "; ".join(failures))


# ----------------------------------------------------------------------------------------------------
# TorchScript


def export_torchscript(model: DetectorModel, path: str | Path, atol: float = 1e-4) -> ExportResult:
    """Trace to TorchScript (``torch.jit.load`` runs it without mfclip), verified at other batch sizes."""
    path = Path(path)
    check_output_path(path, SUFFIXES["torchscript"])
    module = _cpu_module(model)
    size = model.image_size
    example = _example(2, size, seed=0)
    batch_sizes = VERIFY_BATCH_SIZES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(module, (example,), check_trace=False)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
            raise ExportError(f"TorchScript tracing failed: {type(exc).__name__}: {reason}") from None
        traced = torch.jit.freeze(traced.eval())
        extra = {METADATA_FILE: json.dumps(_metadata(model))}
        with _temporary_beside(path) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            loaded = _jit_load(tmp)

            def run(images: torch.Tensor) -> np.ndarray:
                with torch.no_grad():
                    return loaded(images).float().numpy()

            diff = _compare(module, run, size, batch_sizes)
            if not diff <= atol:
                raise ExportError(
                    f"the traced model differs from PyTorch by up to {diff:.2e} (tolerance {atol:g}) "
                    f"at batch sizes {batch_sizes}: the inference path has shape-dependent control flow"
                )
    return ExportResult(path, "torchscript", "trace", diff, batch_sizes)


def export_model(
    model: DetectorModel, path: str | Path, fmt: str, opset: int | None = None, atol: float = 1e-4
) -> ExportResult:
    """Export ``model`` in ``fmt`` (``onnx`` or ``torchscript``) to ``path``."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx":
        return export_onnx(model, path, opset=opset, atol=atol)
    if opset is not None:
        raise ValueError("--opset applies to ONNX exports only")
    return export_torchscript(model, path, atol=atol)


def _jit_load(path: Path) -> Any:
    # torch.jit is deprecated in recent PyTorch but still the way to run a TorchScript file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def load_exported(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function scoring float32 images (B, 3, S, S) in [0, 1] with an exported file: P(fake) (B,).

    This runs the export: a TorchScript file's code through ``torch.jit.load``, an ONNX graph in
    onnxruntime. Only load exports you made or trust.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        run = _onnx_runner(path)
        return lambda images: run(torch.from_numpy(np.asarray(images, dtype=np.float32)))
    module = _jit_load(path)

    def score(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.asarray(images, dtype=np.float32))).float().numpy()

    return score


def exported_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata an export carries (mfclip version, model name, image size, input/output).

    Nothing in the file runs: ONNX metadata is parsed by ``onnx``, and a TorchScript file's
    ``extra/mfclip.json`` is read from its zip (an archive without it has no metadata: ``{}``).
    """
    from mfclip.models.readers import CheckpointError, read_torchscript_extra_file

    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {entry.key: entry.value for entry in proto.metadata_props}
    try:
        stored = read_torchscript_extra_file(path, METADATA_FILE)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if stored is None:
        return {}
    try:
        metadata = json.loads(stored.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: extra/{METADATA_FILE} is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ExportError(f"{path}: extra/{METADATA_FILE} is not a JSON object")
    return metadata


def exported_input_contract(path: str | Path) -> tuple[int, InputConfig]:
    """``(image_size, input contract)`` recorded in an export; ExportError when it records none."""
    metadata = exported_metadata(path)
    try:
        size = int(metadata["image_size"])
        contract = InputConfig.from_dict(json.loads(metadata[INPUT_CONTRACT_KEY]), source=f"{path}")
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(
            f"{path}: records no input contract ({type(exc).__name__}: {exc}); export it again with this "
            "version of mfclip"
        ) from None
    return size, contract


def exported_transform(path: str | Path) -> ImageTransform:
    """The transform that turns a photo (or face crop) into the input of an exported model.

    Built from the input contract the export carries, with the same builder the Detector uses, so
    ``load_exported(path)(exported_transform(path)(image)[None].numpy())`` scores as the Detector does.
    """
    size, contract = exported_input_contract(path)
    return ImageTransform.from_contract(size, contract)

"""Reading weight files without running code stored in them, and the checkpoint directory's config.json.

Shared by :mod:`mfclip.models.checkpoint`, :mod:`mfclip.models.weights`, :mod:`mfclip.models.hub` and the
registry; it imports nothing else of mfclip. What each reader can execute:

- ``.safetensors``: nothing (a JSON header and raw tensor bytes);
- pickled torch files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``): ``torch.load(weights_only=True)``, whose
  unpickler only rebuilds tensors and plain containers (plus Lightning's ``AttributeDict``);
- TorchScript archives: :func:`read_torchscript_state_dict` unpickles ``data.pkl`` with a restricted
  unpickler of its own and reads the tensors from the zip, and :func:`read_torchscript_extra_file` reads a
  file saved beside the module (``torch.jit.save(..., _extra_files=...)``) as bytes; the archive's code
  (``code/``, ``constants.pkl``, any scripted ``__setstate__``) is never run;
- ``config.json``: ``json``.

Pickles and TorchScript archives may not hold tensors that declare more values than their storage holds
(zero-stride views): their shapes could otherwise size a model far larger than the file.

Files the project writes carry an integrity record (size and SHA-256, :func:`file_record`) that
:func:`verify_file` checks before the file is parsed: checkpoint directories in their config.json,
single-file (Lightning) checkpoints in a sidecar ``<file>.integrity.json`` (:func:`verify_sidecar`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

__all__ = [
    "ALIASES_KEY",
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "INTEGRITY_SUFFIX",
    "MODEL_CARD_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "checkpoint_weights_path",
    "file_record",
    "integrity_sidecar",
    "is_checkpoint_dir",
    "is_torchscript_archive",
    "read_checkpoint_config",
    "read_integrity_sidecar",
    "read_safetensors",
    "read_torch_file",
    "read_torchscript_extra_file",
    "read_torchscript_state_dict",
    "safetensors_shapes",
    "sha256_file",
    "strip_wrapper_prefixes",
    "verify_file",
    "verify_sidecar",
]

FORMAT = "mfclip-checkpoint"
FORMAT_VERSION = 2  # 2: typed metadata, the input contract in the model config
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
ALIASES_KEY = "mfclip_aliases"  # safetensors metadata: {dropped key: kept key} for tied tensors
INTEGRITY_SUFFIX = ".integrity.json"  # beside a single-file checkpoint: its size and SHA-256

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, malformed or does not fit the model (the message says so)."""


# ---------------------------------------------------------------------------------------------------
# Integrity records
# ---------------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of a file, the record :func:`verify_file` checks."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def verify_file(path: str | Path, record: Mapping[str, Any], recorded_in: str) -> None:
    """Raise when ``path`` does not have the size and SHA-256 of ``record`` (missing entries are not checked).

    ``recorded_in`` names where the record came from, for the message (e.g. ``config.json``).
    """
    path = Path(path)
    size = path.stat().st_size
    expected_size = record.get("bytes")
    if isinstance(expected_size, int) and not isinstance(expected_size, bool) and size != expected_size:
        state = "truncated" if size < expected_size else "longer than written"
        raise CheckpointError(f"{path}: {state} ({size} bytes, {recorded_in} records {expected_size})")
    expected_hash = record.get("sha256")
    if isinstance(expected_hash, str) and sha256_file(path) != expected_hash.lower():
        raise CheckpointError(
            f"{path}: checksum mismatch with {recorded_in}: the file is corrupt or was modified after saving"
        )


def integrity_sidecar(path: str | Path) -> Path:
    """The integrity record beside a single-file checkpoint: ``last.ckpt`` → ``last.ckpt.integrity.json``."""
    path = Path(path)
    return path.with_name(path.name + INTEGRITY_SUFFIX)


def read_integrity_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The integrity record written beside ``path`` (size, SHA-256, step), or None when there is none."""
    sidecar = integrity_sidecar(path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{sidecar}: unreadable integrity record: {_first_line(exc)}") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{sidecar}: the integrity record is not a JSON object")
    return record


def verify_sidecar(path: str | Path) -> dict[str, Any] | None:
    """Check ``path`` against its integrity sidecar, if it has one; returns the record."""
    record = read_integrity_sidecar(path)
    if record is not None:
        verify_file(path, record, integrity_sidecar(path).name)
    return record


# ---------------------------------------------------------------------------------------------------
# Checkpoint directories
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    _check_weights_record(data.get("weights"), config_path)
    return data


def _check_weights_record(record: Any, config_path: Path) -> None:
    if record is None:
        return
    if not isinstance(record, dict):
        raise CheckpointError(f"{config_path}: 'weights' is not an object")
    checks = (
        ("file", lambda v: isinstance(v, str), "a file name"),
        ("bytes", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a byte count"),
        ("sha256", lambda v: isinstance(v, str) and bool(_SHA256.match(v.lower())), "64 hex digits"),
    )
    for key, valid, what in checks:
        if key in record and not valid(record[key]):
            raise CheckpointError(f"{config_path}: weights.{key} must be {what}, found {record[key]!r}")


def checkpoint_weights_path(directory: str | Path, document: Mapping[str, Any]) -> Path:
    """The weights file a checkpoint's config.json names, confined to the checkpoint directory.

    ``weights.file`` (default ``model.safetensors``) must be a plain ``.safetensors`` file name: no folder
    part, no ``..``, not absolute. A symbolic link inside the directory is followed (the Hugging Face
    cache stores its files that way).
    """
    directory = Path(directory)
    record = document.get("weights") if isinstance(document.get("weights"), dict) else {}
    name = record.get("file", WEIGHTS_NAME)
    config_path = directory / CONFIG_NAME
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "\x00" not in name
        and PurePosixPath(name).name == name
        and PureWindowsPath(name).name == name
    )
    if not plain:
        raise CheckpointError(
            f"{config_path}: weights.file {name!r} is not a file name inside the checkpoint directory "
            "(folders, '..' and absolute paths are refused)"
        )
    if not name.endswith(".safetensors"):
        raise CheckpointError(f"{config_path}: weights.file {name!r} is not a .safetensors file")
    return directory / name


# ---------------------------------------------------------------------------------------------------
# safetensors and pickled torch files
# ---------------------------------------------------------------------------------------------------


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its tied-tensor table ``{dropped key: kept key}``."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # SafetensorError, OSError, header decoding errors
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {_first_line(exc)}") from None
    return state, _aliases(metadata, path)


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a safetensors file, tied aliases included, from its header alone."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {_first_line(exc)}") from None
    for alias, target in _aliases(metadata, path).items():
        if target in shapes and alias not in shapes:
            shapes[alias] = shapes[target]
    return shapes


def _aliases(metadata: Mapping[str, str], path: Path) -> dict[str, str]:
    if ALIASES_KEY not in metadata:
        return {}
    try:
        aliases = json.loads(metadata[ALIASES_KEY])
    except (json.JSONDecodeError, TypeError, ValueError):
        aliases = None
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise CheckpointError(f"{path}: unreadable tied-tensor table in the file header")
    return aliases


def read_torch_file(path: str | Path, *, mmap: bool = False) -> Any:
    """Read a ``.safetensors`` file or a pickled torch file safely (``weights_only=True``) onto the CPU.

    ``mmap=True`` maps the tensors of a zip-format file instead of reading them (a cheap readability check).
    TorchScript archives are refused here; :func:`read_torchscript_state_dict` reads their tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if is_torchscript_archive(path):
        raise CheckpointError(f"{path}: a TorchScript archive, not a state dict")
    try:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:
            # Lightning checkpoints may hold its AttributeDict: allow exactly that container and retry.
            if "AttributeDict" not in str(exc):
                raise
            with torch.serialization.safe_globals(_lightning_safe_globals()):
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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
    _refuse_expanded_tensors(payload, path)
    return payload


def _refuse_expanded_tensors(payload: Any, path: Path) -> None:
    """Refuse a tensor that declares more values than its storage holds (a zero-stride or overlapping view).

    A pickle may describe a tensor of any shape over a one-element storage; trusting such shapes would let
    a small file size a huge model past the checks made before allocation. Weights never need that.
    """
    pending, seen = [payload], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if item.layout == torch.strided and item.numel() > _storage_elements(item):
                raise CheckpointError(
                    f"{path}: a tensor of shape {tuple(item.shape)} is a view over only "
                    f"{_storage_elements(item)} stored values; weights must have all their values stored"
                )
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


def _storage_elements(tensor: torch.Tensor) -> int:
    """How many elements of ``tensor``'s dtype its storage holds from its offset on."""
    return tensor.untyped_storage().nbytes() // tensor.element_size() - tensor.storage_offset()


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


def strip_wrapper_prefixes(key: str) -> str:
    """Remove the prefixes DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add."""
    while key.startswith("module."):
        key = key[len("module.") :]
    return key.replace("_orig_mod.", "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# TorchScript archives, read without running them
# ---------------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip holding TorchScript code (``torch.jit.save`` output), which ``torch.load`` refuses."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, by their ``state_dict`` names, without running it.

    ``data.pkl`` is unpickled by a restricted unpickler that builds tensors from the archive's storages and
    records every TorchScript object's attributes; nothing from the archive is called. The class
    declarations in ``code/`` are read as text to tell parameters and buffers from other attributes. A module
    that restores its state with a scripted ``__setstate__`` is refused: its tensors cannot be named without
    running that code.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return _TorchScriptArchive(path, archive).state_dict()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable TorchScript archive: {_first_line(exc)}") from None


def read_torchscript_extra_file(path: str | Path, name: str) -> bytes | None:
    """The bytes of the extra file ``name`` that ``torch.jit.save(..., _extra_files=...)`` stored in a
    TorchScript archive (``<archive>/extra/<name>``), or None when it holds none; read from the zip
    without running anything, and refused when it declares more than a TorchScript member is allowed."""
    path = Path(path)
    if not name or Path(name).name != name:
        raise ValueError(f"{name!r} is not an extra file name")
    if not is_torchscript_archive(path):
        raise CheckpointError(f"{path}: not a TorchScript archive (torch.jit.save output)")
    try:
        with zipfile.ZipFile(path) as archive:
            reader = _TorchScriptArchive(path, archive)
            try:
                return reader.member(f"{reader.prefix}extra/{name}")
            except KeyError:
                return None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable TorchScript archive: {_first_line(exc)}") from None


class _ScriptObject:
    """Stands in for an object of a TorchScript class: records its pickled state and runs nothing."""

    type_name = ""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    @property
    def state(self) -> Any:
        return self.__dict__.get("_state")


class _StorageType:
    """What a ``torch.<Type>Storage`` global stands for in a persistent id: the storage's dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any, **__: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor without a storage")
    tensor = torch.as_strided(storage, tuple(size), tuple(stride), int(offset))
    if tensor.numel() > storage.numel() - int(
        offset
    ):  # a zero-stride or overlapping view: see read_torch_file
        raise pickle.UnpicklingError(
            f"a tensor of shape {tuple(tensor.shape)} is a view over only {storage.numel()} stored values"
        )
    return tensor


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> Any:
    return data


def _restore_type_tag(value: Any, *_: Any) -> Any:
    return value


def _build_list(items: Any) -> list[Any]:
    return list(items)


# Bounds on what reading an archive may cost, whatever its zip headers declare. TorchScript stores every
# member uncompressed; data.pkl and the class files of even the largest CLIP models are a few MB.
_MAX_MEMBER_BYTES = 64 << 20  # data.pkl, a code/ file
_MAX_MODULE_DEPTH = 100  # nesting of submodules
_MAX_MODULE_VISITS = 100_000  # submodules visited (a shared one counts at every place it appears)

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    ("torch.jit._pickle", "build_intlist"): _build_list,
    ("torch.jit._pickle", "build_doublelist"): _build_list,
    ("torch.jit._pickle", "build_boollist"): _build_list,
    ("torch.jit._pickle", "build_tensorlist"): _build_list,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles TorchScript's ``data.pkl``: our own functions for the few globals it uses, nothing else."""

    def __init__(self, file: Any, reader: _TorchScriptArchive) -> None:
        super().__init__(file)
        self.reader = reader

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return self.reader.script_class(f"{module}.{name}")
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which mfclip does not read")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        storage_id = isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
        if not (storage_id and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        return self.reader.storage(str(pid[2]), pid[1].dtype, pid[4])


class _TorchScriptArchive:
    def __init__(self, path: Path, archive: zipfile.ZipFile) -> None:
        self.path = path
        self.archive = archive
        self.archive_bytes = path.stat().st_size
        self.visits = 0
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a TorchScript archive (no single data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        self.classes: dict[str, type[_ScriptObject]] = {}
        self.storages: dict[str, torch.Tensor] = {}
        self.declarations: dict[str, _ClassDeclaration | None] = {}

    def script_class(self, type_name: str) -> type[_ScriptObject]:
        if type_name not in self.classes:
            self.classes[type_name] = type("ScriptObject", (_ScriptObject,), {"type_name": type_name})
        return self.classes[type_name]

    def storage(self, key: str, dtype: torch.dtype, numel: Any) -> torch.Tensor:
        if key in self.storages:
            return self.storages[key]
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not isinstance(numel, int) or numel < 0 or info.file_size != numel * itemsize:
            raise pickle.UnpicklingError(f"storage {key} holds {info.file_size} bytes, not {numel} elements")
        if info.compress_type != zipfile.ZIP_STORED:
            raise pickle.UnpicklingError(f"storage {key} is compressed, which TorchScript never writes")
        if info.compress_size != info.file_size or info.header_offset + info.file_size > self.archive_bytes:
            raise pickle.UnpicklingError(f"storage {key} declares more bytes than the archive holds")
        buffer = torch.empty(info.file_size, dtype=torch.uint8)
        if info.file_size:
            with self.archive.open(info) as handle:
                if handle.readinto(memoryview(buffer.numpy())) != info.file_size:
                    raise pickle.UnpicklingError(f"storage {key} is truncated")
        tensor = buffer.view(dtype)
        self.storages[key] = tensor
        return tensor

    def declaration(self, type_name: str) -> _ClassDeclaration | None:
        """The parameter and buffer names a class's ``code/`` file declares (read as text), if found."""
        if type_name not in self.declarations:
            module, _, name = type_name.rpartition(".")
            source = f"{self.prefix}code/{module.replace('.', '/')}.py"
            try:
                text = self.member(source).decode("utf-8", errors="replace")
            except KeyError:
                text = ""
            self.declarations[type_name] = _ClassDeclaration.parse(text, name)
        return self.declarations[type_name]

    def member(self, name: str) -> bytes:
        """A small member's bytes (KeyError when absent), refused when it would decompress to too much."""
        info = self.archive.getinfo(name)
        if info.file_size > _MAX_MEMBER_BYTES:
            raise CheckpointError(
                f"{self.path}: {name} declares {info.file_size:,} bytes, more than a TorchScript archive "
                f"holds there (at most {_MAX_MEMBER_BYTES:,} are read)"
            )
        return self.archive.read(info)

    def state_dict(self) -> dict[str, torch.Tensor]:
        marker = f"{self.prefix}byteorder"
        order = b"little"
        if marker in self.archive.namelist():
            order = self.member(marker).strip()
        if order != b"little" or sys.byteorder != "little":
            raise CheckpointError(
                f"{self.path}: mfclip reads little-endian TorchScript archives on little-endian machines only"
            )
        pickled = self.member(f"{self.prefix}data.pkl")
        try:
            root = _RestrictedUnpickler(io.BytesIO(pickled), self).load()
        except CheckpointError:
            raise
        except Exception as exc:  # UnpicklingError, RuntimeError from as_strided bounds, ...
            message = _first_line(exc)
            raise CheckpointError(f"{self.path}: unreadable TorchScript archive: {message}") from None
        if not isinstance(root, _ScriptObject):
            raise CheckpointError(f"{self.path}: the TorchScript archive does not hold a module")
        tensors: dict[str, torch.Tensor] = {}
        self._collect(root, "", tensors, ())
        if not tensors:
            raise CheckpointError(f"{self.path}: the TorchScript archive holds no parameters or buffers")
        return tensors

    def _collect(
        self, obj: _ScriptObject, prefix: str, out: dict[str, torch.Tensor], parents: tuple[int, ...]
    ) -> None:
        where = prefix.rstrip(".") or "the root"
        if id(obj) in parents:
            raise CheckpointError(f"{self.path}: TorchScript module {where} contains itself")
        self.visits += 1
        if len(parents) >= _MAX_MODULE_DEPTH:
            raise CheckpointError(
                f"{self.path}: TorchScript modules nested over {_MAX_MODULE_DEPTH} deep at {where}"
            )
        if self.visits > _MAX_MODULE_VISITS:
            raise CheckpointError(
                f"{self.path}: the TorchScript archive has over {_MAX_MODULE_VISITS:,} submodules"
            )
        declaration = self.declaration(obj.type_name)
        state = obj.state
        scripted_state = declaration is not None and declaration.sets_state
        if not isinstance(state, dict) or scripted_state:
            if _holds_tensors(state):
                raise CheckpointError(
                    f"{self.path}: TorchScript module {obj.type_name.removeprefix('__torch__.')} "
                    f"({where}) restores its tensors with a scripted "
                    "__setstate__, which mfclip does not run. Convert the file once where you trust it: "
                    "torch.jit.load it, save model.state_dict() with safetensors.torch.save_file, and pass "
                    "the .safetensors file"
                )
            return
        names = declaration.state_names if declaration is not None else None
        for attribute, value in state.items():
            if isinstance(value, torch.Tensor):
                if names is None or attribute in names:
                    out[f"{prefix}{attribute}"] = value
            elif isinstance(value, _ScriptObject):
                child = self.declaration(value.type_name)
                if child is None or child.is_module:
                    self._collect(value, f"{prefix}{attribute}.", out, (*parents, id(obj)))


def _holds_tensors(value: Any) -> bool:
    """Whether a pickled state holds a tensor anywhere (each shared or cyclic part looked at once)."""
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            return True
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, _ScriptObject):
            pending.append(item.state)
    return False


class _ClassDeclaration:
    """What a TorchScript class declaration in ``code/`` says: module or not, parameters and buffers."""

    def __init__(self, is_module: bool, state_names: set[str] | None, sets_state: bool) -> None:
        self.is_module = is_module
        self.state_names = state_names
        self.sets_state = sets_state

    @classmethod
    def parse(cls, source: str, name: str) -> _ClassDeclaration | None:
        match = re.search(rf"^class {re.escape(name)}\((\w+)\):\n((?:[ \t]+.*\n|[ \t]*\n)*)", source, re.M)
        if match is None:
            return None
        base, body = match.groups()
        names: set[str] | None = set()
        for field in ("__parameters__", "__buffers__"):
            listed = re.search(rf"^\s+{field} = \[(.*?)\]", body, re.M)
            if listed is None:
                names = None
                break
            assert names is not None
            names.update(re.findall(r'"((?:[^"\\]|\\.)*)"', listed.group(1)))
        sets_state = re.search(r"^\s+def __setstate__\(", body, re.M) is not None
        return cls(base == "Module", names, sets_state)

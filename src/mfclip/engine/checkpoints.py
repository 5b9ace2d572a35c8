"""The Lightning checkpoints of a run: integrity records, kept step checkpoints, which one to resume from.

Every checkpoint the engine writes (``last.ckpt``, ``best.ckpt``, ``step-N.ckpt``) gets a sidecar
``<file>.integrity.json`` with its size, SHA-256, step and epoch (:func:`write_record`). When ``last.ckpt``
is replaced, the previous one is kept as ``step-N.ckpt`` (``trainer.keep_step_checkpoints`` of them, by a
hard link, so keeping costs no copy). Resuming checks the chosen checkpoint first (:func:`checkpoint_problem`)
and, when it is damaged, names the newest readable one to resume from instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mfclip.engine import runinfo
from mfclip.models.readers import (
    CheckpointError,
    file_record,
    integrity_sidecar,
    read_integrity_sidecar,
    read_torch_file,
    verify_sidecar,
)
from mfclip.utils.io import atomic_write_json

STEP_PATTERN = re.compile(r"^step-(\d+)\.ckpt$")


class HashingWriter:
    """A write-only file wrapper that counts and hashes the bytes going through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def write_record(path: Path, checkpoint: dict[str, Any], written: HashingWriter | None = None) -> None:
    """Write the integrity sidecar of a just-written checkpoint file (hashes it unless ``written`` did)."""
    size = path.stat().st_size
    if written is not None and written.size == size:
        record: dict[str, Any] = {"bytes": size, "sha256": written.digest.hexdigest()}
    else:
        record = file_record(path)
    record = {"file": path.name, **record}
    for key in ("global_step", "epoch"):
        if isinstance(checkpoint.get(key), int):
            record[key] = checkpoint[key]
    atomic_write_json(integrity_sidecar(path), record)
    _CHECKED[_check_key(path)] = None  # just written and hashed: keeping it later needs no re-check


def remove_with_record(path: Path) -> None:
    for item in (path, integrity_sidecar(path)):
        with contextlib.suppress(FileNotFoundError):
            item.unlink()


def keep_as_step_checkpoint(last: Path, keep: int) -> None:
    """Before ``last`` is replaced, keep it as ``step-N.ckpt`` (N from its record); prune to ``keep`` such.

    A hard link keeps the old file without copying it; the atomic replace of ``last`` then leaves it intact.
    A damaged ``last`` (a run resumed from an earlier checkpoint because of it) is not kept: it would count
    as the newest step checkpoint and push out the readable ones.
    """
    if keep < 1 or not last.is_file() or checkpoint_problem(last) is not None:
        return
    try:
        record = read_integrity_sidecar(last)
    except CheckpointError:
        record = None
    step = record.get("global_step") if record else None
    if not isinstance(step, int):
        return  # an unrecorded last.ckpt (an older run): nothing says which step it holds
    target = last.with_name(f"step-{step}.ckpt")
    if not target.exists():
        try:
            os.link(last, target)
        except OSError:
            return  # no hard links on this file system: keeping would mean copying the whole file
        with contextlib.suppress(FileNotFoundError):  # a record left behind by a step file deleted by hand
            integrity_sidecar(target).unlink()
        os.link(integrity_sidecar(last), integrity_sidecar(target))
    kept = sorted(step_checkpoints(last.parent), key=lambda item: item[0], reverse=True)
    for _, old in kept[keep:]:
        remove_with_record(old)


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step-N.ckpt`` files in a checkpoint folder."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = STEP_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return found


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (missing, size or checksum off its record, unreadable or unsafe
    to unpickle), as a message naming the file; None when it is fine.

    The tensors are memory-mapped, not read, so the check costs a hash of the file and an unpickling."""
    if not path.is_file():
        return f"{path}: missing"
    key = _check_key(path)
    if key not in _CHECKED:  # composing the config and training check the same file: hash it once
        try:
            verify_sidecar(path)
            read_torch_file(path, mmap=True)
            _CHECKED[key] = None
        except CheckpointError as exc:
            _CHECKED[key] = str(exc)
    return _CHECKED[key]


_CHECKED: dict[tuple[str, int, int, int], str | None] = {}


def _check_key(path: Path) -> tuple[str, int, int, int]:
    """What identifies one state of a checkpoint file and its sidecar, for :data:`_CHECKED`."""
    sidecar = integrity_sidecar(path)
    stat = path.stat()
    return (
        str(path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        sidecar.stat().st_mtime_ns if sidecar.exists() else 0,
    )


@dataclass(frozen=True)
class Candidate:
    """A checkpoint of a run one can resume from: its ``--resume-from`` name, file and step (if recorded)."""

    name: str
    path: Path
    step: int | None


def candidates(checkpoint_dir: Path) -> list[Candidate]:
    """The run's checkpoints, newest first: ``last``, ``step-N`` by step, ``best`` by its recorded step."""
    found: list[Candidate] = []
    for name, filename in (("last", runinfo.LAST_CHECKPOINT), ("best", runinfo.BEST_CHECKPOINT)):
        path = checkpoint_dir / filename
        if path.is_file():
            found.append(Candidate(name, path, _recorded_step(path)))
    found += [Candidate(f"step-{step}", path, step) for step, path in step_checkpoints(checkpoint_dir)]

    def order(candidate: Candidate) -> tuple[int, int, float]:
        # newest step first; on a tie last, then step-N, then best; unrecorded steps by modification time
        step = candidate.step if candidate.step is not None else -1
        rank = {"last": 2, "best": 0}.get(candidate.name, 1)
        return (step, rank, candidate.path.stat().st_mtime)

    return sorted(found, key=order, reverse=True)


def _recorded_step(path: Path) -> int | None:
    try:
        record = read_integrity_sidecar(path)
    except CheckpointError:
        return None
    step = record.get("global_step") if record else None
    return step if isinstance(step, int) else None


def resume_checkpoint(run_dir: Path, resume_from: str | None = None) -> Path:
    """The checkpoint of ``run_dir`` to resume from: ``resume_from`` (``last`` by default, ``best`` or
    ``step-N``), checked first. A damaged or missing choice is one :class:`CheckpointError` line that
    names the file and offers the newest readable checkpoint (``--resume-from NAME``)."""
    checkpoint_dir = run_dir / runinfo.CHECKPOINT_DIR
    choice = resume_from or "last"
    filenames = {"last": runinfo.LAST_CHECKPOINT, "best": runinfo.BEST_CHECKPOINT}
    if choice not in filenames and not STEP_PATTERN.match(f"{choice}.ckpt"):
        raise CheckpointError(f"--resume-from {choice!r}: expected last, best or step-N")
    path = checkpoint_dir / filenames.get(choice, f"{choice}.ckpt")
    problem = checkpoint_problem(path)
    if problem is None:
        return path
    for candidate in candidates(checkpoint_dir):
        if candidate.path != path and checkpoint_problem(candidate.path) is None:
            at = f" (step {candidate.step})" if candidate.step is not None else ""
            raise CheckpointError(
                f"{problem}; resume from the newest readable checkpoint{at} with "
                f"--resume {run_dir} --resume-from {candidate.name}"
            )
    raise CheckpointError(f"{problem}; no other readable checkpoint in {checkpoint_dir} to resume from")

"""Resumable jobs: an append-only log of results, a settings stamp and an exclusive lock.

Every long job (``preprocess``, ``evaluate``, ``predict``) writes its results as it goes and continues
where it stopped when it is run again. They share three pieces:

- :class:`AppendLog`: result records appended to a text file (JSON lines, or CSV rows under a header)
  and flushed after every append. A kill at any byte leaves at most one torn record at the end:
  reading ignores it, and opening the log for appending cuts it off.
- :class:`SettingsStamp`: the settings that shape the results, in a JSON file beside them. Resuming
  with other settings is refused with a message naming every setting that changed (a job that can
  recompute instead asks :meth:`SettingsStamp.changes` and starts over).
- :class:`JobLock`: one run at a time per output. It is an ``flock`` on a lock file, so the operating
  system releases it when its holder dies: a lock file left by a killed run is simply taken over. The
  file names its holder (process, host, start time) for the message a second run gets.

Records are text: file names that are not valid UTF-8 are written and read back byte for byte
(``surrogateescape``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from errno import EACCES, EAGAIN, EINVAL, ENOLCK, ENOSYS, ENOTSUP, EOPNOTSUPP
from pathlib import Path
from typing import IO, Any, BinaryIO

from mfclip.utils.io import atomic_write, atomic_write_json, remove_temporaries

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: locks fall back to exclusive creation
    fcntl = None  # type: ignore[assignment]

ENCODING = "utf-8"
ERRORS = "surrogateescape"
_BLOCK = 1 << 20  # bytes read at a time when scanning a log


class JobError(ValueError):
    """A job cannot start or resume on its output; the message names the file and what to do."""


class JobLockedError(JobError):
    """Another live process is running a job on the same output."""


class SettingsChangedError(JobError):
    """The output holds results made with other settings."""


class LogFormatError(JobError):
    """A file is not a log this job wrote (another header, a line that does not parse)."""


# ---------------------------------------------------------------------------------------------------
# Record formats


class JsonLines:
    """One JSON object per line; every newline ends a record (JSON escapes newlines in strings)."""

    name = "JSON-lines file"
    header: str | None = None

    def encode(self, records: Iterable[Mapping[str, Any]]) -> str:
        return "".join(json.dumps(record, separators=(",", ":"), default=str) + "\n" for record in records)

    def complete_length(self, handle: BinaryIO) -> int:
        """How many bytes at the start of ``handle`` are whole records: up to its last newline."""
        position = handle.seek(0, os.SEEK_END)
        while position > 0:
            step = min(_BLOCK, position)
            position -= step
            handle.seek(position)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                return position + newline + 1
        return 0

    def complete_lines(self, handle: BinaryIO) -> Iterator[str]:
        """The whole records of ``handle``, one line each (a torn last line is left out)."""
        for line in handle:
            if not line.endswith(b"\n"):
                return
            yield line.decode(ENCODING, ERRORS)

    def decode(self, lines: Iterable[str], path: Path, strict: bool, hint: str) -> Iterator[dict[str, Any]]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                yield record
            elif strict:
                raise LogFormatError(f"{path}: line {number} is not a JSON object{hint}")


class CsvRows:
    """CSV rows under a header of ``columns``; ``format_value(column, value)`` renders a cell.

    A quoted cell may hold a newline, so a record ends at a newline outside quotes: where the number of
    ``"`` so far is even (the writer doubles every quote inside a cell).
    """

    name = "CSV file"

    def __init__(self, columns: Sequence[str], format_value: Callable[[str, Any], Any] | None = None) -> None:
        self.columns = tuple(columns)
        self.format_value = format_value
        self.header = self._rows([self.columns])

    def _rows(self, rows: Iterable[Sequence[Any]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue()

    def encode(self, records: Iterable[Mapping[str, Any]]) -> str:
        render = self.format_value
        if render is None:
            return self._rows([record.get(column) for column in self.columns] for record in records)
        return self._rows(
            [render(column, record.get(column)) for column in self.columns] for record in records
        )

    def complete_length(self, handle: BinaryIO) -> int:
        """How many bytes at the start of ``handle`` are whole records (and the header): up to the last
        newline with an even number of ``"`` before it. Read in blocks: memory stays small."""
        handle.seek(0)
        offset = end = 0
        odd = False  # inside a quoted cell
        while block := handle.read(_BLOCK):
            if b'"' not in block:
                if not odd and (newline := block.rfind(b"\n")) >= 0:
                    end = offset + newline + 1
            else:
                start = 0
                while (newline := block.find(b"\n", start)) >= 0:
                    odd ^= bool(block.count(b'"', start, newline) % 2)
                    if not odd:
                        end = offset + newline + 1
                    start = newline + 1
                odd ^= bool(block.count(b'"', start) % 2)
            offset += len(block)
        return end

    def complete_lines(self, handle: BinaryIO) -> Iterator[str]:
        """The header and whole records of ``handle``, one string each (a record whose quoted cells hold
        newlines spans several lines); a torn last record is left out."""
        pending: list[bytes] = []
        odd = False
        for line in handle:
            if not line.endswith(b"\n"):
                return
            odd ^= bool(line.count(b'"') % 2)
            if odd:
                pending.append(line)
                continue
            if pending:
                pending.append(line)
                line = b"".join(pending)
                pending.clear()
            yield line.decode(ENCODING, ERRORS)

    def check_header(self, fields: Sequence[str], path: Path, hint: str) -> None:
        if tuple(fields) != self.columns:
            raise LogFormatError(
                f"{path}: columns {list(fields)} are not the expected {list(self.columns)}{hint}"
            )

    def decode(self, lines: Iterable[str], path: Path, strict: bool, hint: str) -> Iterator[dict[str, Any]]:
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            return
        self.check_header(header, path, hint)
        width = len(self.columns)
        for fields in reader:
            if len(fields) == width:
                yield dict(zip(self.columns, fields, strict=True))
            elif fields and strict:
                raise LogFormatError(
                    f"{path}: line {reader.line_num} has {len(fields)} fields, not {width}{hint}"
                )


RecordFormat = JsonLines | CsvRows


# ---------------------------------------------------------------------------------------------------
# The append-only log


class _Prefix(io.RawIOBase):
    """The first ``length`` bytes of a binary file, as a readable stream (what pandas reads a log from)."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self.handle = handle
        self.left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.left)
        if size <= 0:
            return 0
        read = self.handle.readinto(memoryview(buffer)[:size]) or 0
        self.left -= read
        return read


class AppendLog:
    """Records appended to ``path`` and flushed after every :meth:`append`; see the module docstring.

    ``strict``: a line in the middle that does not parse makes the file unusable (:class:`LogFormatError`,
    ending with ``hint``), else it is skipped. Appending needs :meth:`open` (or ``with log:``), which
    first cuts off a torn last record and writes the CSV header into an empty file. Data reach the disk
    (``fsync``) every ``sync_every`` appends and on :meth:`close`. Hold the job's :class:`JobLock` while
    appending.
    """

    def __init__(
        self,
        path: str | Path,
        record_format: RecordFormat | None = None,
        *,
        strict: bool = True,
        hint: str = "",
        sync_every: int = 64,
    ) -> None:
        self.path = Path(path)
        self.format: RecordFormat = record_format if record_format is not None else JsonLines()
        self.strict = strict
        self.hint = f"; {hint}" if hint else ""
        self.sync_every = max(int(sync_every), 1)
        self._handle: IO[str] | None = None
        self._unsynced = 0

    # reading

    def records(self) -> Iterator[dict[str, Any]]:
        """The whole records in the file, in order (a torn last one is left out). The file is read as
        the records are taken, a line at a time: memory does not grow with its size."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            yield from self.format.decode(
                self.format.complete_lines(handle), self.path, self.strict, self.hint
            )

    def read_frame(self, **read_csv: Any) -> Any:
        """The whole records of a CSV log as a ``pandas.DataFrame`` (``read_csv`` options apply).

        Memory and time are those of ``pandas.read_csv`` on the file: a million rows take about a second.
        """
        import pandas as pd

        if not isinstance(self.format, CsvRows):
            raise TypeError("read_frame needs a CSV log")
        empty = pd.DataFrame({column: [] for column in self.format.columns})
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return empty
        with handle:
            length = self.format.complete_length(handle)
            handle.seek(0)
            header = next(csv.reader([handle.readline().decode(ENCODING, ERRORS)]), [])
            if not length:
                return empty
            self.format.check_header(header, self.path, self.hint)
            handle.seek(0)
            prefix = io.BufferedReader(_Prefix(handle, length), _BLOCK)
            return pd.read_csv(prefix, encoding=ENCODING, encoding_errors=ERRORS, **read_csv)

    # writing

    def open(self) -> AppendLog:
        """Make the file ready for appending: cut a torn last record, check or write the header."""
        if self._handle is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repair()
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh and isinstance(self.format, CsvRows):
            with self.path.open("r", encoding=ENCODING, errors=ERRORS, newline="") as handle:
                self.format.check_header(next(csv.reader(handle), []), self.path, self.hint)
        self._handle = self.path.open("a", encoding=ENCODING, errors=ERRORS, newline="")
        if fresh and self.format.header:
            self._handle.write(self.format.header)
            self._handle.flush()
        return self

    def repair(self) -> int:
        """Cut a torn last record (a write cut short by a kill); returns the number of bytes removed."""
        try:
            handle = self.path.open("r+b")
        except FileNotFoundError:
            return 0
        with handle:
            size = handle.seek(0, os.SEEK_END)
            length = self.format.complete_length(handle)
            if length == size:
                return 0
            handle.truncate(length)
            handle.flush()
            os.fsync(handle.fileno())
        return size - length

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append ``records`` and flush them to the operating system (a process kill loses none)."""
        if self._handle is None:
            raise RuntimeError(f"{self.path}: open the log before appending")
        text = self.format.encode(records)
        if not text:
            return
        self._handle.write(text)
        self._handle.flush()
        self._unsynced += 1
        if self._unsynced >= self.sync_every:
            os.fsync(self._handle.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
            self._unsynced = 0

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the whole log with ``records`` in one atomic step (e.g. to compact it)."""
        self.close()
        text = (self.format.header or "") + self.format.encode(records)
        with atomic_write(self.path, "wb") as handle:
            handle.write(text.encode(ENCODING, ERRORS))

    def __enter__(self) -> AppendLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------
# The settings stamp


def setting_changes(stored: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (nested keys dotted), sorted by key.

    Numbers compare by value (``1 == 1.0``; NaN equals NaN; floats within a relative 1e-9, the rounding
    of settings computed in another order); lists compare in order (an order can matter, as in
    detector thresholds).
    """
    old, new = _flatten(stored), _flatten(_as_json(settings))
    missing = "(not set)"
    return [
        f"{key}: {_shown(old.get(key, missing))} -> {_shown(new.get(key, missing))}"
        for key in sorted(set(old) | set(new))
        if not _same(old.get(key, missing), new.get(key, missing))
    ]


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        if isinstance(a, float) or isinstance(b, float):
            return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _shown(value: Any) -> str:
    return value if value == "(not set)" else repr(value)


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings, numpy and torch scalars
    numbers, paths text), so comparisons are fair."""
    return json.loads(json.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()  # a numpy or torch scalar
    return str(value)


class SettingsStamp:
    """The settings that shaped a job's results: ``{"format": kind, "format_version": 1, "settings": ...}``.

    A stamp may also hold a ``context``: facts about the run that are not settings and never make a
    resume refuse, such as the working directory that relative paths in the results are relative to.
    ``accept_bare``: a JSON object without a ``settings`` key (a stamp written before this format) is
    read as the settings themselves.
    """

    FORMAT_VERSION = 1

    def __init__(self, path: str | Path, kind: str, *, accept_bare: bool = False) -> None:
        self.path = Path(path)
        self.kind = kind
        self.accept_bare = accept_bare

    def _document(self) -> dict[str, Any] | None:
        """The stamp as ``{"settings": ..., "context": ...}``; None when there is none."""
        if not self.path.exists():
            return None
        try:
            document = json.loads(self.path.read_text(encoding=ENCODING))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JobError(f"{self.path}: unreadable ({exc}); remove it or use another output") from None
        if isinstance(document, dict) and isinstance(document.get("settings"), dict):
            kind = document.get("format", self.kind)
            if kind != self.kind:
                raise JobError(
                    f"{self.path}: written by {kind!r}, not {self.kind!r}; use another output folder"
                )
            context = document.get("context")
            return {"settings": document["settings"], "context": context if isinstance(context, dict) else {}}
        if isinstance(document, dict) and self.accept_bare:
            return {"settings": document, "context": {}}
        raise JobError(f"{self.path}: not a settings file of {self.kind!r}; remove it or use another output")

    def read(self) -> dict[str, Any] | None:
        """The stored settings; None when there is no stamp. Raises :class:`JobError` when unreadable."""
        document = self._document()
        return None if document is None else document["settings"]

    def context(self) -> dict[str, Any]:
        """The stored context (empty when there is none). Raises :class:`JobError` when unreadable."""
        document = self._document()
        return {} if document is None else document["context"]

    def changes(self, settings: Mapping[str, Any]) -> list[str] | None:
        """What differs between the stored settings and ``settings`` (see :func:`setting_changes`);
        None when there is no stamp."""
        stored = self.read()
        return None if stored is None else setting_changes(stored, settings)

    def write(self, settings: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> None:
        document = {
            "format": self.kind,
            "format_version": self.FORMAT_VERSION,
            "settings": _as_json(settings),
        }
        if context:
            document["context"] = _as_json(context)
        remove_temporaries(self.path.parent, target=self.path.name)  # of a write a kill cut short
        atomic_write_json(self.path, document)

    def require(
        self,
        settings: Mapping[str, Any],
        *,
        holder: str | Path,
        advice: str,
        what: str = "results",
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the stamp (with ``context``) when there is none; refuse (:class:`SettingsChangedError`)
        when it differs. A stamp that stays keeps its context.

        The message reads ``{holder} holds {what} made with other settings (size: 256 -> 224); {advice}``.
        """
        changed = self.changes(settings)
        if changed is None:
            self.write(settings, context)
        elif changed:
            raise SettingsChangedError(
                f"{holder} holds {what} made with other settings ({'; '.join(changed)}); {advice}"
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# The lock


#: What ``flock`` answers on a file system that cannot lock (NFS mounted ``nolock``, some FUSE file systems).
_NO_LOCKS = frozenset({ENOLCK, ENOSYS, ENOTSUP, EOPNOTSUPP, EINVAL})


class JobLock:
    """One run at a time on an output: an exclusive ``flock`` on ``path``, removed on release.

    ``job`` and ``target`` word the refusal: ``{target} is in use by another {job} run (process 1234 on
    host, since ...)``. A lock file nobody holds (its run was killed) is taken over; so is a lock file
    of the older pid-only kind whose process is gone. Use as a context manager.
    """

    def __init__(self, path: str | Path, job: str, target: str | Path | None = None) -> None:
        self.path = Path(path)
        self.job = job
        self.target = str(target) if target is not None else str(self.path)
        self._fd: int | None = None

    @classmethod
    def in_folder(cls, folder: str | Path, job: str) -> JobLock:
        """The lock of a job that writes into ``folder``: ``FOLDER/.lock``."""
        return cls(Path(folder) / ".lock", job, folder)

    @classmethod
    def beside(cls, file: str | Path, job: str) -> JobLock:
        """The lock of a job that writes the one file ``file``: ``FILE.lock`` beside it."""
        file = Path(file)
        return cls(file.with_name(f"{file.name}.lock"), job, file)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> JobLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = self._try_lock()
            if fd is None:
                continue
            holder = _legacy_holder(fd)
            if holder is not None:
                os.close(fd)
                raise JobLockedError(self._message({"pid": holder}))
            record = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.job, "since": _now()}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            self._fd = fd
            return self
        raise JobError(f"{self.path}: cannot take the lock (it keeps changing); try again")

    def _try_lock(self) -> int | None:
        """A descriptor holding the lock, or None when the file was replaced meanwhile (retry)."""
        if fcntl is None:  # pragma: no cover
            return self._try_create()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (EAGAIN, EACCES):
                raise JobLockedError(self._message(_read_holder(self.path))) from None
            if exc.errno in _NO_LOCKS:
                with contextlib.suppress(OSError):
                    if self.path.stat().st_size == 0:  # the empty file this call made
                        self.path.unlink()
                raise JobError(
                    f"{self.path}: the file system holding it cannot lock files ({exc.strerror}; an NFS "
                    f"mount without locking?), so a second {self.job} run could not be kept off "
                    f"{self.target}; write the output to a file system with locks, such as a local disk"
                ) from None
            raise
        # The holder removes the file when it releases: a lock on a file no longer at ``path`` is void.
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is None or (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            os.close(fd)
            return None
        return fd

    def _try_create(self) -> int | None:  # pragma: no cover - exercised only without fcntl
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(self.path)
            if holder is not None and _alive(holder):
                raise JobLockedError(self._message(holder)) from None
            self.path.unlink(missing_ok=True)
            return None

    def _message(self, holder: dict[str, Any] | None) -> str:
        who = "another process"
        if holder and holder.get("pid"):
            who = f"process {holder['pid']}"
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += f" on {holder['host']}"
            if holder.get("since"):
                who += f", since {holder['since']}"
        return (
            f"{self.target} is in use by another {self.job} run ({who}); wait for it to finish or use "
            "another output"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def _read_holder(path: Path) -> dict[str, Any] | None:
    """What a lock file says about its holder (None when it says nothing readable)."""
    try:
        text = path.read_text(encoding=ENCODING, errors="replace").strip()
    except OSError:
        return None
    if text.isdigit():
        return {"pid": int(text)}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None
    return holder if isinstance(holder, dict) else None


def _legacy_holder(fd: int) -> int | None:
    """The live process named by a pid-only lock file (as older releases wrote, without flock), or None."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid != os.getpid() and _alive({"pid": pid}) else None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder's process still runs (a holder on another host is assumed to)."""
    host = holder.get("host")
    if host and host != socket.gethostname():
        return True
    pid = int(holder.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = [
    "AppendLog",
    "CsvRows",
    "JobError",
    "JobLock",
    "JobLockedError",
    "JsonLines",
    "LogFormatError",
    "SettingsChangedError",
    "SettingsStamp",
    "setting_changes",
]

"""The resumable-job kit: append log (kills at any byte), settings stamp, exclusive lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mfclip.utils.jobs import (
    AppendLog,
    CsvRows,
    JobError,
    JobLock,
    JobLockedError,
    JsonLines,
    LogFormatError,
    SettingsChangedError,
    SettingsStamp,
    setting_changes,
)

ODD = os.fsdecode(b"caf\xe9")  # a file name that is not valid UTF-8 (a surrogate escape)
RECORDS = [
    {"path": "a.png", "score": "0.25", "error": ""},
    {"path": 'two\nlines, "quoted"', "score": "", "error": "unreadable: line one\nline two"},
    {"path": ODD, "score": "1.0", "error": ""},
    {"path": "last.png", "score": "0.5", "error": 'a "quote"'},
]


@pytest.mark.parametrize(
    "record_format", [JsonLines(), CsvRows(("path", "score", "error"))], ids=["jsonl", "csv"]
)
def test_a_kill_at_any_byte_loses_only_the_torn_record(tmp_path: Path, record_format) -> None:
    full = tmp_path / "full"
    with AppendLog(full, record_format) as log:
        for record in RECORDS:
            log.append([record])
    data = full.read_bytes()
    assert list(AppendLog(full, record_format).records()) == RECORDS
    # Where each record's bytes end: a cut at or after that offset keeps it.
    ends, probe = [], tmp_path / "probe"
    with AppendLog(probe, record_format) as log:
        for record in RECORDS:
            log.append([record])
            ends.append(probe.stat().st_size)
    extra = {"path": "after.png", "score": "0.1", "error": ""}
    cut = tmp_path / "cut"
    for size in range(len(data) + 1):
        cut.write_bytes(data[:size])
        kept = RECORDS[: sum(end <= size for end in ends)]
        assert list(AppendLog(cut, record_format).records()) == kept, size
        if isinstance(record_format, CsvRows):
            frame = AppendLog(cut, record_format).read_frame(dtype=object, keep_default_na=False)
            assert frame.to_dict("records") == kept, size
        with AppendLog(cut, record_format) as log:  # opening cuts the torn tail off
            log.append([extra])
        assert list(AppendLog(cut, record_format).records()) == [*kept, extra], size


def test_a_damaged_line_is_refused_or_skipped_and_a_foreign_header_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(LogFormatError, match=r"log.jsonl: line 2 is not a JSON object; not ours"):
        list(AppendLog(path, hint="not ours").records())
    assert list(AppendLog(path, strict=False).records()) == [{"a": 1}, {"a": 2}]

    table = tmp_path / "table.csv"
    table.write_text("name,value\nx,1\n")
    log = AppendLog(table, CsvRows(("path", "score")), hint="choose another --out")
    with pytest.raises(
        LogFormatError, match=r"columns \['name', 'value'\] are not the expected \['path', 'score'\]"
    ):
        list(log.records())
    with pytest.raises(LogFormatError, match="choose another --out"):
        log.open()
    assert table.read_text() == "name,value\nx,1\n"  # untouched


def test_csv_log_reads_as_a_frame_and_compacts_atomically(tmp_path: Path) -> None:
    render = {"score": lambda value: "" if value is None else repr(value)}
    record_format = CsvRows(("row", "score"), format_value=lambda c, v: render.get(c, lambda x: x)(v))
    log = AppendLog(tmp_path / "scores.csv", record_format)
    assert log.read_frame().empty
    with log:
        log.append({"row": i, "score": i / 4 if i % 3 else None} for i in range(6))
    with open(log.path, "a") as handle:
        handle.write("6,0.1")  # torn
    frame = log.read_frame(na_values={"score": [""]}, keep_default_na=False)
    assert frame["row"].tolist() == list(range(6))
    assert frame["score"].isna().tolist() == [True, False, False, True, False, False]
    log.rewrite([{"row": 9, "score": 0.5}, {"row": ODD, "score": None}])
    assert list(log.records()) == [{"row": "9", "score": "0.5"}, {"row": ODD, "score": ""}]
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "record_format", [JsonLines(), CsvRows(("path", "score", "error"))], ids=["jsonl", "csv"]
)
def test_reading_and_repairing_a_large_log_takes_little_memory(tmp_path: Path, record_format) -> None:
    """A resume reads its log a record at a time: memory does not grow with the file (here 5 MB and more)."""
    import tracemalloc

    path = tmp_path / "big"
    row = {"path": "/data/test/0000/0000000.png", "score": "0.123456", "error": 'a, "quoted"\nerror'}
    with AppendLog(path, record_format) as log:
        for _ in range(1000):
            log.append([row] * 100)
    with open(path, "ab") as handle:
        handle.write(b'"/data/torn')  # a kill inside a quoted cell
    assert path.stat().st_size > 5_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in AppendLog(path, record_format).records())
        AppendLog(path, record_format).repair()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 2_500_000, peak  # the old reader held the whole file, twice over
    assert path.read_bytes().endswith(
        b'error"\n' if isinstance(record_format, CsvRows) else b"}\n"
    )  # torn tail cut


def test_settings_stamp_names_every_change(tmp_path: Path) -> None:
    stamp = SettingsStamp(tmp_path / "settings.json", "mfclip-test")
    settings = {"size": 256, "detector": {"name": "mtcnn", "min_face": 20}, "sizes": (1, 2)}
    assert stamp.changes(settings) is None
    stamp.require(settings, holder="OUT", advice="use another folder")
    assert json.loads(stamp.path.read_text())["format"] == "mfclip-test"
    stamp.require(settings, holder="OUT", advice="use another folder")  # same settings (a tuple is a list)
    changed = {"size": 224, "detector": {"name": "mtcnn", "min_face": 40}, "sizes": [1, 2], "new": True}
    with pytest.raises(
        SettingsChangedError,
        match=r"^OUT holds crops made with other settings \(detector.min_face: 20 -> 40; "
        r"new: \(not set\) -> True; size: 256 -> 224\); use another folder$",
    ):
        stamp.require(changed, holder="OUT", what="crops", advice="use another folder")
    assert setting_changes({"a": {"b": 1}}, {"a": None}) == ["a: (not set) -> None", "a.b: 1 -> (not set)"]

    assert stamp.context() == {}

    (tmp_path / "bare.json").write_text(json.dumps({"size": 256}))
    assert SettingsStamp(tmp_path / "bare.json", "mfclip-test", accept_bare=True).read() == {"size": 256}
    with pytest.raises(JobError, match="not a settings file"):
        SettingsStamp(tmp_path / "bare.json", "mfclip-test").read()
    with pytest.raises(JobError, match="written by 'mfclip-test', not 'mfclip-other'"):
        SettingsStamp(stamp.path, "mfclip-other").read()
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(JobError, match=r"broken\.json: unreadable"):
        SettingsStamp(tmp_path / "broken.json", "mfclip-test").read()


def test_settings_compare_numbers_by_value_and_lists_in_order(tmp_path: Path) -> None:
    import numpy as np
    import torch

    stamp = SettingsStamp(tmp_path / "settings.json", "mfclip-test")
    settings = {
        "threshold": np.float64(0.1) + 0.2,  # 0.30000000000000004
        "margin": float("nan"),
        "size": np.int64(224),
        "scale": torch.tensor(1.5),
        "thresholds": [0.6, 0.7, 0.7],
        "weights": Path("models") / "w.bin",
    }
    stamp.require(settings, holder="OUT", advice="-", context={"workdir": Path("/work")})
    assert json.loads(stamp.path.read_text())["settings"]["size"] == 224  # a number, not "224"
    assert stamp.context() == {"workdir": "/work"}
    same = {
        "threshold": 0.3,
        "margin": float("nan"),
        "size": 224.0,
        "scale": 1.5,
        "thresholds": (0.6, 0.7, 0.7),
        "weights": "models/w.bin",
    }
    assert stamp.changes(same) == []  # NaN equals NaN; the rounding of 0.1 + 0.2 is no change
    stamp.require(same, holder="OUT", advice="-", context={"workdir": "/elsewhere"})
    assert stamp.context() == {"workdir": "/work"}  # a kept stamp keeps its context
    assert stamp.changes({**same, "threshold": 0.3001, "thresholds": [0.7, 0.6, 0.7], "size": "224"}) == [
        "size: 224 -> '224'",
        "threshold: 0.30000000000000004 -> 0.3001",
        "thresholds: [0.6, 0.7, 0.7] -> [0.7, 0.6, 0.7]",
    ]


def test_a_file_system_without_locks_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr("mfclip.utils.jobs.fcntl.flock", no_locks)
    with pytest.raises(
        JobError,
        match=r"^.*out\.csv\.lock: the file system holding it cannot lock files \(No locks available; an NFS "
        r"mount without locking\?\), so a second predict run could not be kept off OUT; write the output "
        r"to a file system with locks",
    ):
        JobLock(tmp_path / "out.csv.lock", "predict", "OUT").acquire()
    assert not (tmp_path / "out.csv.lock").exists()


HOLD = (
    "import sys, time\n"
    "from mfclip.utils.jobs import JobLock\n"
    "JobLock(sys.argv[1], 'test').acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def _holder(lock: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None and child.stdout.readline().strip() == b"held"
    return child


def test_lock_is_exclusive_names_its_holder_and_is_taken_over_after_a_kill(tmp_path: Path) -> None:
    lock = tmp_path / "out" / ".lock"
    child = _holder(lock)
    try:
        with pytest.raises(
            JobLockedError, match=rf"^OUT is in use by another test run \(process {child.pid}, since "
        ):
            JobLock(lock, "test", "OUT").acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert lock.exists()  # left behind by the killed run, but nobody holds it any more
    with JobLock(lock, "test") as held:
        assert held.held and json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(JobLockedError):  # a second lock in the same process is refused too
            JobLock(lock, "test").acquire()
    assert not lock.exists()


def test_pid_only_lock_files_of_older_releases(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) as sleeper:
        lock.write_text(str(sleeper.pid))
        with pytest.raises(JobLockedError, match=f"process {sleeper.pid}"):
            JobLock(lock, "test").acquire()
        sleeper.kill()
    with JobLock(lock, "test"):  # its process is gone: the lock is stale
        pass
    assert not lock.exists()


def test_a_lock_file_replaced_while_locking_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run releasing the lock removes the file; whoever locked the removed file must try again."""
    lock = tmp_path / ".lock"
    real_flock = __import__("fcntl").flock
    calls = {"n": 0}

    def flock_then_replace(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        calls["n"] += 1
        if calls["n"] == 1:  # the holder released (removed) the file just after this run opened it
            lock.unlink()
            lock.write_text("")

    monkeypatch.setattr("mfclip.utils.jobs.fcntl.flock", flock_then_replace)
    with JobLock(lock, "test"):
        assert calls["n"] == 2 and json.loads(lock.read_text())["pid"] == os.getpid()

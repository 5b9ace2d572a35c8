"""Hostile weight files: what the readers refuse, and that refusing costs little time and memory.

The TorchScript archives here are a real ``torch.jit.save`` output whose ``data.pkl`` or ``code/`` members are
replaced by hand-written ones, as an attacker would.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from mfclip.models.readers import CheckpointError, read_torch_file, read_torchscript_state_dict

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / save are deprecated


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torchscript") / "tiny.pt"
    torch.jit.save(torch.jit.script(_Tiny()), str(path))
    return path


def _prefix(archive: Path) -> str:
    with zipfile.ZipFile(archive) as handle:
        return next(n for n in handle.namelist() if n.endswith("/data.pkl"))[: -len("data.pkl")]


def _rewrite(archive: Path, out: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    """A copy of ``archive`` with ``members`` (name -> (bytes, compression)) replaced."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename not in members:
                target.writestr(info, source.read(info))
        for name, (data, compression) in members.items():
            target.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return out


def _text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _get(index: int) -> bytes:
    return pickle.LONG_BINGET + index.to_bytes(4, "little")


def _put(index: int) -> bytes:
    return pickle.LONG_BINPUT + index.to_bytes(4, "little")


_NEW_MODULE = b"c__torch__\nTiny\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ  # an object of a scripted class


def test_self_containing_module_is_one_error(archive: Path, tmp_path: Path) -> None:
    """A module whose state holds itself: one CheckpointError, not a RecursionError."""
    data = (
        pickle.PROTO + b"\x02" + _NEW_MODULE + _put(0)
        + pickle.EMPTY_DICT + _text("self") + _get(0) + pickle.SETITEM + pickle.BUILD + pickle.STOP
    )  # fmt: skip
    bad = _rewrite(
        archive, tmp_path / "cycle.pt", {_prefix(archive) + "data.pkl": (data, zipfile.ZIP_STORED)}
    )
    with pytest.raises(CheckpointError, match="contains itself"):
        read_torchscript_state_dict(bad)


def test_shared_submodules_cannot_blow_up_the_walk(archive: Path, tmp_path: Path) -> None:
    """Each level's state names the level below twice: 2**levels places from a few hundred bytes."""
    levels = 17
    data = pickle.PROTO + b"\x02" + _NEW_MODULE + pickle.EMPTY_DICT + pickle.BUILD + _put(0) + pickle.POP
    for level in range(1, levels + 1):
        data += _NEW_MODULE + pickle.EMPTY_DICT
        data += _text("a") + _get(level - 1) + pickle.SETITEM + _text("b") + _get(level - 1) + pickle.SETITEM
        data += pickle.BUILD + _put(level) + (pickle.POP if level < levels else b"")
    data += pickle.STOP
    bad = _rewrite(archive, tmp_path / "dag.pt", {_prefix(archive) + "data.pkl": (data, zipfile.ZIP_STORED)})
    with pytest.raises(CheckpointError, match="over 100,000 submodules"):
        read_torchscript_state_dict(bad)


def test_shared_state_without_tensors_is_looked_at_once(archive: Path, tmp_path: Path) -> None:
    """A non-dictionary state made of 2**60 paths through shared tuples is searched for tensors linearly."""
    levels = 60
    data = pickle.PROTO + b"\x02" + _NEW_MODULE + pickle.NONE + _put(0) + pickle.POP
    for level in range(1, levels + 1):
        data += _get(level - 1) + _get(level - 1) + pickle.TUPLE2 + _put(level)
        data += pickle.POP if level < levels else b""
    data += pickle.BUILD + pickle.STOP
    bad = _rewrite(
        archive, tmp_path / "tuples.pt", {_prefix(archive) + "data.pkl": (data, zipfile.ZIP_STORED)}
    )
    with pytest.raises(CheckpointError, match="holds no parameters or buffers"):
        read_torchscript_state_dict(bad)


def _linear_code(archive: Path) -> str:
    """The archive's code file of the Linear layer: ``code/__torch__/torch/nn/modules/linear.py``, or
    ``.../linear/___torch_mangle_<n>.py`` when this process scripted a Linear before."""
    prefix = _prefix(archive)
    with zipfile.ZipFile(archive) as handle:
        names = [n[len(prefix) :] for n in handle.namelist() if n.startswith(prefix)]
    return next(
        n for n in names if n.startswith("code/__torch__/torch/nn/modules/linear") and n.endswith(".py")
    )


@pytest.mark.parametrize("member", ["linear code", "data.pkl"])
def test_members_that_decompress_to_too_much_are_refused(archive: Path, tmp_path: Path, member: str) -> None:
    """A deflated member of a few hundred KB that would expand to 65 MB is refused before it is read."""
    member = _linear_code(archive) if member == "linear code" else member
    with zipfile.ZipFile(archive) as handle:
        original = handle.read(_prefix(archive) + member)
    padded = original + b"\n" * (65 << 20)  # still valid: Python ignores blank lines, pickle stops at STOP
    bad = _rewrite(archive, tmp_path / "bomb.pt", {_prefix(archive) + member: (padded, zipfile.ZIP_DEFLATED)})
    assert bad.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"declares 68,157,\d+ bytes"):
        read_torchscript_state_dict(bad)


class _Expanded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("grid", torch.zeros(()).expand(300, 400))  # one stored value, 120,000 declared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.grid.sum()


def test_tensors_declaring_more_values_than_stored_are_refused(tmp_path: Path) -> None:
    """Zero-stride views would let a tiny file pass a huge model's size check before allocation."""
    expanded = {"visual.conv1.weight": torch.zeros(()).expand(300, 400)}
    pickled = tmp_path / "expanded.pt"
    torch.save({"state_dict": expanded}, pickled)
    with pytest.raises(CheckpointError, match=r"shape \(300, 400\) is a view over only 1 stored values"):
        read_torch_file(pickled)
    scripted = tmp_path / "expanded-script.pt"
    torch.jit.save(torch.jit.script(_Expanded()), str(scripted))
    with pytest.raises(CheckpointError, match=r"shape \(300, 400\) is a view over only 1 stored values"):
        read_torchscript_state_dict(scripted)
    # views that stay within their storage (slices, tied tensors) are fine
    base = torch.arange(12.0)
    torch.save({"a": base[2:6], "b": base.view(3, 4), "c": base.view(3, 4).t()}, tmp_path / "views.pt")
    assert read_torch_file(tmp_path / "views.pt")["a"].tolist() == [2.0, 3.0, 4.0, 5.0]

"""Export: ONNX (onnxruntime) and TorchScript graphs match PyTorch at several batch sizes."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.data.transforms import ImageTransform
from mfclip.inference.export import ExportError, export_model, exported_metadata, load_exported
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mfclip-tiny").eval()


@pytest.fixture(scope="module")
def photos(astronaut_rgb: np.ndarray, grace_hopper_path: Path) -> torch.Tensor:
    """Real photos at the model's size: crops of the astronaut and the grace_hopper portrait."""
    transform = ImageTransform(64)
    crops = [astronaut_rgb[i * 37 : i * 37 + 260, (i * 53) % 240 : (i * 53) % 240 + 260] for i in range(6)]
    images = [transform(Image.fromarray(np.ascontiguousarray(c))) for c in crops]
    images.append(transform(Image.open(grace_hopper_path).convert("RGB")))
    return torch.stack(images)


def check_matches(model, path: Path, photos: torch.Tensor) -> None:
    run = load_exported(path)
    for batch in (photos[:1], photos[:4], photos):  # batch sizes 1, 4 and 7: the batch is dynamic
        expected = model.predict_proba(batch).numpy()
        got = run(batch.numpy())
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert len(set(np.round(run(photos.numpy()), 5))) > 1  # different images, different scores


def test_torchscript_matches_pytorch(model, photos: torch.Tensor, tmp_path: Path) -> None:
    result = export_model(model, tmp_path / "tiny.pt", "torchscript")
    assert result.path.is_file() and result.max_abs_diff <= 1e-4
    check_matches(model, result.path, photos)
    with refuse_running_torchscript():
        metadata = exported_metadata(result.path)  # read from the zip: none of the export's code runs
    assert metadata["image_size"] == "64" and metadata["model_name"] == "mfclip-tiny"


@contextlib.contextmanager
def refuse_running_torchscript() -> Iterator[None]:
    """Any attempt to load (and so run) a TorchScript file fails inside the block."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a TorchScript file was loaded")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.jit, "load", refuse)
        patch.setattr(torch._C, "import_ir_module", refuse)
        yield


def test_exported_metadata_of_damaged_or_foreign_files_is_one_line(tmp_path: Path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(2, 1))
    plain = tmp_path / "plain.pt"
    torch.jit.save(scripted, str(plain))
    bomb = tmp_path / "bomb.pt"
    torch.jit.save(scripted, str(bomb), _extra_files={"mfclip.json": "{}"})
    with zipfile.ZipFile(bomb) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    name = next(n for n in members if n.endswith("/extra/mfclip.json"))
    members[name] = b" " * (65 << 20)  # deflates to a few KB, would expand to 65 MB
    with zipfile.ZipFile(bomb, "w") as archive:
        for member, data in members.items():
            compression = zipfile.ZIP_DEFLATED if member == name else zipfile.ZIP_STORED
            archive.writestr(member, data, compress_type=compression)
    state_dict = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, state_dict)
    with refuse_running_torchscript():
        assert exported_metadata(plain) == {}  # an archive saved without mfclip's metadata
        with pytest.raises(ExportError, match=r"extra/mfclip\.json declares 68,157,440 bytes"):
            exported_metadata(bomb)
        with pytest.raises(ExportError, match=r"weights\.pt: not a TorchScript archive"):
            exported_metadata(state_dict)


@pytest.mark.slow
def test_onnx_matches_pytorch(model, photos: torch.Tensor, tmp_path: Path) -> None:
    import onnx

    result = export_model(model, tmp_path / "tiny.onnx", "onnx")
    assert result.path.is_file() and not list(tmp_path.glob("*.data"))  # one self-contained file
    check_matches(model, result.path, photos)
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == ["images"] and [o.name for o in proto.graph.output] == [
        "p_fake"
    ]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic batch size
    assert exported_metadata(result.path)["image_size"] == "64"


def test_export_cli(model, tmp_path: Path, capsys) -> None:
    checkpoint = save_checkpoint(model, tmp_path / "ckpt", {"name": "export-test"})
    out = tmp_path / "cli.pt"
    assert run_app(app, ["export", "-c", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and "matches PyTorch within" in capsys.readouterr().out
    assert run_app(app, ["export", "-c", str(checkpoint), "--format", "tflite"]) == 2
    assert "--format must be one of onnx, torchscript" in capsys.readouterr().err
    assert run_app(app, ["export", "-c", str(checkpoint), "--format", "torchscript", "--opset", "17"]) == 2
    assert "--opset applies to --format onnx only" in capsys.readouterr().err


def test_export_cli_errors_are_one_line(
    model, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mfclip.inference.export as export

    checkpoint = save_checkpoint(model, tmp_path / "tiny", {"name": "export-errors"})

    def must_not_run(*args, **kwargs):
        raise AssertionError("an exporter ran although the output cannot be written")

    monkeypatch.setattr(export, "_export_onnx_dynamo", must_not_run)
    monkeypatch.setattr(export, "_export_onnx_legacy", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out, message in [
        (blocker / "model.onnx", f"{blocker / 'model.onnx'}: cannot create the folder {blocker}"),
        (tmp_path, f"{tmp_path}: is a folder; give a file name such as {tmp_path / 'model.onnx'}"),
    ]:
        assert run_app(app, ["export", "-c", str(checkpoint), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"mfclip: error: {message}" in err and "Traceback" not in err

    def failing_exporter(*args, **kwargs):
        raise RuntimeError("unsupported operator\nwith a long second line")

    monkeypatch.setattr(export, "_export_onnx_dynamo", failing_exporter)
    monkeypatch.setattr(export, "_export_onnx_legacy", failing_exporter)
    out = tmp_path / "model.onnx"
    assert run_app(app, ["export", "-c", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ONNX export of" in err and "dynamo exporter: RuntimeError: unsupported operator;" in err
    assert "second line" not in err and not out.exists() and not list(tmp_path.glob(".model.onnx.*"))

    monkeypatch.setattr(export, "_compare", lambda *args: 0.5)  # the traced graph disagrees with PyTorch
    out = tmp_path / "model.pt"
    assert run_app(app, ["export", "-c", str(checkpoint), "-f", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differs from PyTorch by up to 5.00e-01" in err and "Traceback" not in err and not out.exists()

"""The Hugging Face Hub without the network: loading from a cache the tests write, pushing to a fake Hub.

Offline tests lay a checkpoint out as the Hub cache does (``HF_HUB_OFFLINE=1``). Online tests point
``huggingface_hub`` at ``FakeHub`` on 127.0.0.1 (see ``hub_server.py``) and check what arrives there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from hub_server import FakeHub, write_hub_cache
from mfclip import Detector, create_model
from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mfclip.models.model_card import strip_front_matter

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
METADATA = {
    "name": "tiny-hub-test",
    "datasets": ["synthetic-faces"],
    "metrics": {"unseen": {"auc": 0.75, "ap": 0.7}},
    "synthetic": True,
}


def tiny_checkpoint(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(create_model("mfclip-tiny"), directory, METADATA)


def scores(model) -> torch.Tensor:
    with torch.no_grad():
        return model.predict_proba(IMAGES)


def checkpoint_files(directory: Path) -> dict[str, Path]:
    return {name: directory / name for name in ("config.json", "model.safetensors", "README.md")}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hub-checkpoints")
    return tiny_checkpoint(root / "main", seed=0), tiny_checkpoint(root / "dev", seed=1)


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """huggingface_hub online, talking to a FakeHub on 127.0.0.1 only, with an empty cache."""
    from huggingface_hub import constants

    hub = FakeHub().start()
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield hub
    hub.stop()


# ------------------------------------------------------------------------------------------------
# Loading from the Hub cache (offline)
# ------------------------------------------------------------------------------------------------


def test_checkpoint_from_the_cache_with_revisions(
    checkpoints: tuple[Path, Path], offline_cache: Path
) -> None:
    main, dev = checkpoints
    write_hub_cache(offline_cache, "mfclip-org/tiny", checkpoint_files(main))
    dev_snapshot = write_hub_cache(offline_cache, "mfclip-org/tiny", checkpoint_files(dev), revision="dev")
    expected_main, expected_dev = scores(load_checkpoint(main)[0]), scores(load_checkpoint(dev)[0])

    detector = Detector.from_pretrained("hf-hub:mfclip-org/tiny", device="cpu")
    assert torch.equal(detector.score(IMAGES), expected_main)
    assert detector.metadata.name == "tiny-hub-test"
    assert detector.model_card()["card"].startswith("---\n")  # the README came along
    for name in ("hf-hub:mfclip-org/tiny@dev", f"hf-hub:mfclip-org/tiny@{dev_snapshot.name}"):
        assert torch.equal(scores(load_checkpoint(name)[0]), expected_dev), name
    assert torch.equal(scores(load_checkpoint("hf-hub:mfclip-org/tiny", revision="dev")[0]), expected_dev)


def test_offline_with_an_empty_cache_is_one_line(offline_cache: Path, capsys) -> None:
    with pytest.raises(CheckpointError) as err:
        Detector.from_pretrained("hf-hub:mfclip-org/absent")
    message = str(err.value)
    assert "\n" not in message
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" in message
    assert "hf download mfclip-org/absent" in message

    with pytest.raises(CheckpointError, match=r"^runs/bestt: no such checkpoint .* write hf-hub:runs/bestt$"):
        Detector.from_pretrained("runs/bestt")  # a mistyped local path is never looked up on the Hub

    code = run_app(app, ["predict", "--checkpoint", "hf-hub:mfclip-org/absent", str(offline_cache)])
    err_text = capsys.readouterr().err
    assert code == 2
    first, *rest = err_text.splitlines()
    assert first.startswith("mfclip: error: hf-hub:mfclip-org/absent:") and "HF_HUB_OFFLINE=1" in first
    assert "Traceback" not in err_text and all("MFCLIP_DEBUG" in line for line in rest)


def test_hub_checkpoints_are_read_by_the_safe_loader(
    checkpoints: tuple[Path, Path], offline_cache: Path, tmp_path: Path
) -> None:
    """A Hub checkpoint goes through the same checks as a local one: weights.file stays inside the snapshot,
    and the recorded checksum is verified."""
    main, _ = checkpoints
    outside = tmp_path / "elsewhere" / "model.safetensors"
    outside.parent.mkdir()
    outside.write_bytes((main / "model.safetensors").read_bytes())
    document = json.loads((main / "config.json").read_text())
    document["weights"]["file"] = "../../../../elsewhere/model.safetensors"
    files = checkpoint_files(main) | {"config.json": json.dumps(document).encode()}
    write_hub_cache(offline_cache, "mfclip-org/escape", files)
    with pytest.raises(CheckpointError, match=r"weights\.file .* is not a file name inside"):
        load_checkpoint("hf-hub:mfclip-org/escape")

    tampered = bytearray((main / "model.safetensors").read_bytes())
    tampered[-3] ^= 0xFF
    write_hub_cache(
        offline_cache, "mfclip-org/tampered", checkpoint_files(main) | {"model.safetensors": bytes(tampered)}
    )
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint("hf-hub:mfclip-org/tampered")


def test_a_plain_owner_name_never_reaches_the_hub(
    checkpoints: tuple[Path, Path],
    fake_hub: FakeHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    """``runs/best`` mistyped (no such folder here) must not load whatever the Hub holds under that name:
    only ``hf-hub:`` ids are looked up there, for checkpoints, the CLI and CLIP weights alike."""
    from mfclip.models.weights import load_clip_state_dict

    main, dev = checkpoints
    fake_hub.add_repo("runs/best", {name: path.read_bytes() for name, path in checkpoint_files(main).items()})
    monkeypatch.chdir(tmp_path)
    hint = "; to load the Hugging Face Hub repository of that name, write hf-hub:runs/best"
    for load in (Detector.from_pretrained, load_checkpoint):
        with pytest.raises(CheckpointError) as err:
            load("runs/best")
        assert str(err.value) == "runs/best: no such checkpoint (not a local file or folder)" + hint
    with pytest.raises(CheckpointError) as err:
        load_clip_state_dict("runs/best")
    assert str(err.value) == "runs/best: CLIP weights not found (not a local file or folder)" + hint
    assert run_app(app, ["predict", "--checkpoint", "runs/best", str(tmp_path)]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "mfclip: error: runs/best: no such checkpoint (not a local file or folder)" + hint
    with pytest.raises(CheckpointError, match=r"no such checkpoint \(not a local file or folder\)$"):
        load_checkpoint("runs/last.ckpt")  # a file name: no Hub hint
    assert fake_hub.requests == []

    # the same name as a local folder loads that folder; hf-hub: loads the repository
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "best").symlink_to(dev, target_is_directory=True)
    assert torch.equal(scores(load_checkpoint("runs/best")[0]), scores(load_checkpoint(dev)[0]))
    assert fake_hub.requests == []
    assert torch.equal(scores(load_checkpoint("hf-hub:runs/best")[0]), scores(load_checkpoint(main)[0]))
    assert fake_hub.requests


def test_bad_hub_ids(offline_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a Hugging Face Hub model id"):
        load_checkpoint("hf-hub:not-a-repo")
    with pytest.raises(CheckpointError, match="names revision 'v1' but revision='v2'"):
        load_checkpoint("hf-hub:a/b@v1", revision="v2")
    with pytest.raises(CheckpointError, match="a local checkpoint has no revisions"):
        Detector.from_pretrained(tmp_path, revision="v1")


def test_revisions_cannot_walk_out_of_the_cache(
    checkpoints: tuple[Path, Path], offline_cache: Path, tmp_path: Path
) -> None:
    """huggingface_hub resolves a revision through the file ``refs/<revision>`` of the cache (read offline,
    written online): a revision with ``..`` must not reach files outside it."""
    main, _ = checkpoints
    write_hub_cache(offline_cache, "mfclip-org/tiny", checkpoint_files(main))
    (tmp_path / "ref").write_text("0" * 40)
    escape = os.path.relpath(tmp_path / "ref", offline_cache / "models--mfclip-org--tiny" / "refs")
    for name in (
        f"hf-hub:mfclip-org/tiny@{escape}",
        "hf-hub:mfclip-org/tiny@/etc/hostname",
        "hf-hub:a/b@x y",
    ):
        with pytest.raises(CheckpointError, match="is not a revision name"):
            load_checkpoint(name)
    with pytest.raises(CheckpointError, match="is not a revision name"):
        load_checkpoint("hf-hub:mfclip-org/tiny", revision=escape)
    assert load_checkpoint("hf-hub:mfclip-org/tiny@main")[1].name == "tiny-hub-test"


# ------------------------------------------------------------------------------------------------
# Pushing to (and loading from) a local fake Hub
# ------------------------------------------------------------------------------------------------


def test_push_uploads_the_checkpoint_with_hub_metadata(
    checkpoints: tuple[Path, Path], fake_hub: FakeHub, capsys
) -> None:
    main, dev = checkpoints
    code = run_app(app, ["push", str(main), "mfclip-org/tiny", "--private", "--license", "cc-by-nc-4.0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mfclip-org/tiny" in out and fake_hub.url in out

    repo = fake_hub.repos["mfclip-org/tiny"]
    assert repo.private
    files = fake_hub.files("mfclip-org/tiny")
    assert files["config.json"] == (main / "config.json").read_bytes()
    assert files["model.safetensors"] == (main / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert fake_hub.validated_cards[-1] == card  # huggingface_hub had the Hub validate it first
    front = yaml.safe_load(card.split("---", 2)[1])
    assert front["library_name"] == "mfclip"
    assert front["license"] == "cc-by-nc-4.0"
    assert front["datasets"] == ["synthetic-faces"]
    assert {"mfclip", "deepfake-detection", "synthetic-data"} <= set(front["tags"])
    assert front["synthetic_training_data"] is True
    result = front["model-index"][0]["results"]
    assert {(r["dataset"]["name"], m["type"], m["value"]) for r in result for m in r["metrics"]} == {
        ("unseen", "auc", 0.75),
        ("unseen", "ap", 0.7),
    }
    assert strip_front_matter(card).startswith("# tiny-hub-test")
    assert "Trained on synthetic data" in card
    assert repo.commits[-1]["summary"] == "Upload mfclip checkpoint tiny-hub-test"
    posted = [headers for method, path, headers in fake_hub.requests if path.endswith("/commit/main")]
    assert posted and posted[0].get("authorization") == "Bearer hf_test_token"

    # the pushed checkpoint loads back over HTTP into an empty cache, through the same loader
    detector = Detector.from_pretrained("hf-hub:mfclip-org/tiny", device="cpu")
    assert torch.equal(detector.score(IMAGES), scores(load_checkpoint(main)[0]))

    # a second push to a new branch leaves main alone
    assert run_app(app, ["push", str(dev), "hf-hub:mfclip-org/tiny", "--revision", "dev"]) == 0
    assert fake_hub.files("mfclip-org/tiny")["model.safetensors"] == (main / "model.safetensors").read_bytes()
    assert (
        fake_hub.files("mfclip-org/tiny", "dev")["model.safetensors"]
        == (dev / "model.safetensors").read_bytes()
    )
    assert torch.equal(
        scores(load_checkpoint("hf-hub:mfclip-org/tiny@dev")[0]), scores(load_checkpoint(dev)[0])
    )


def test_push_refuses_a_damaged_checkpoint_before_any_request(
    checkpoints: tuple[Path, Path], fake_hub: FakeHub, tmp_path: Path, capsys
) -> None:
    main, _ = checkpoints
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, path in checkpoint_files(main).items():
        (copy / name).write_bytes(path.read_bytes())
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert run_app(app, ["push", str(copy), "mfclip-org/tiny"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert fake_hub.requests == []


@pytest.mark.parametrize("linked", ["README.md", "model.safetensors"])
def test_push_never_uploads_files_linked_from_outside_the_checkpoint(
    checkpoints: tuple[Path, Path], fake_hub: FakeHub, tmp_path: Path, capsys, linked: str
) -> None:
    """A checkpoint folder from elsewhere whose README.md (or weights without a recorded checksum) is a link
    to a private file: pushing it would publish that file."""
    main, _ = checkpoints
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, path in checkpoint_files(main).items():
        (copy / name).write_bytes(path.read_bytes())
    secret = tmp_path / "home" / "credentials"
    secret.parent.mkdir()
    secret.write_text("aws_secret_access_key = do-not-publish\n")
    if linked == "model.safetensors":
        document = json.loads((copy / "config.json").read_text())
        del document["weights"]["sha256"], document["weights"]["bytes"]
        (copy / "config.json").write_text(json.dumps(document))
    (copy / linked).unlink()
    (copy / linked).symlink_to(secret)
    assert run_app(app, ["push", str(copy), "mfclip-org/tiny"]) == 2
    assert "outside the checkpoint directory" in capsys.readouterr().err
    assert fake_hub.requests == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("hf-hub:mfclip-org/unknown", "no such repository on the Hugging Face Hub"),
        ("hf-hub:mfclip-org/gated", "a gated repository: accept its access conditions"),
        ("hf-hub:mfclip-org/public@nope", "revision 'nope' does not exist in mfclip-org/public"),
        ("hf-hub:mfclip-org/public", "not an mfclip checkpoint repository"),
    ],
)
def test_hub_errors_are_one_line(fake_hub: FakeHub, name: str, message: str) -> None:
    fake_hub.add_repo("mfclip-org/gated", {"config.json": b"{}"}, gated=True)
    fake_hub.add_repo("mfclip-org/public", {"README.md": b"# not a checkpoint\n"})
    with pytest.raises(CheckpointError) as err:
        Detector.from_pretrained(name)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unreachable_hub_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    # huggingface_hub retries a refused connection with backoff (about 20 s); skip its waiting here
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    with pytest.raises(CheckpointError) as err:
        Detector.from_pretrained("hf-hub:mfclip-org/tiny")
    assert "cannot be reached" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_push_command_follows_hf_endpoint(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    """The real command in its own process, pointed at the fake Hub through HF_ENDPOINT alone."""
    main, _ = checkpoints
    hub = FakeHub().start()
    try:
        env = os.environ | {
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_TOKEN": "hf_env_token",
            "HF_HOME": str(tmp_path / "hf-home"),
            "NO_PROXY": "127.0.0.1",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        done = subprocess.run(
            [sys.executable, "-m", "mfclip.cli.main", "push", str(main), "someone/model"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        hub.stop()
    assert done.returncode == 0, done.stderr
    assert sorted(hub.files("someone/model")) == [
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert not hub.repos["someone/model"].private

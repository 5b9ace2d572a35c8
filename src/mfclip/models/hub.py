"""The Hugging Face Hub: resolve ``hf-hub:owner/name[@revision]`` to local files, and push checkpoints.

Downloads go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, revisions, tokens)
and fetch only the files a loader needs; the files are then read by the same loaders as local folders
(:mod:`mfclip.models.readers`). Every failure is a :class:`~mfclip.models.readers.CheckpointError` with a
one-line message: unknown or private repository, gated repository, unknown revision, no network, offline
with the files not cached.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfclip.models.readers import (
    CONFIG_NAME,
    MODEL_CARD_NAME,
    CheckpointError,
    checkpoint_weights_path,
    is_checkpoint_dir,
    read_checkpoint_config,
    verify_file,
)

__all__ = [
    "HUB_PREFIX",
    "HubId",
    "PushResult",
    "download",
    "fetch_clip_weights",
    "fetch_timm_weights",
    "hub_offline",
    "is_hub_id",
    "looks_like_repo_id",
    "missing_path_error",
    "parse_hub_id",
    "push_checkpoint",
    "resolve_checkpoint",
    "shard_names",
]

HUB_PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
# What git refuses in a ref name (``git check-ref-format``): a revision is also a path in the Hub cache
# (``refs/<revision>``), so ``..``, a leading ``/`` and the like must never reach it.
_BAD_REVISION = re.compile(r"^[/.\-]|\.\.|//|/\.|/$|@\{|\.lock(/|$)|[\x00-\x20\x7f~^:?*\[\\]")
_WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".onnx")
_LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"

# What a CLIP weights repository holds, in the order the loaders prefer (see mfclip.models.weights).
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# What a timm model repository (``timm/<architecture>.<tag>``) holds: config.json names the architecture.
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class HubId:
    """A Hub model repository and an optional revision (branch, tag or commit)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_id(value: Any) -> bool:
    """True for a string spelled ``hf-hub:owner/name[@revision]``."""
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse_hub_id(text: str, revision: str | None = None) -> HubId:
    """``hf-hub:owner/name[@revision]`` or ``owner/name`` as a :class:`HubId` (or ``revision=``)."""
    body = text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else text
    repo_id, _, pinned = body.partition("@")
    if not _REPO_ID.match(repo_id):
        raise CheckpointError(f"{text}: not a Hugging Face Hub model id (expected {HUB_PREFIX}owner/name)")
    if pinned and revision and pinned != revision:
        raise CheckpointError(f"{text}: names revision {pinned!r} but revision={revision!r} was also given")
    chosen = pinned or revision or None
    if chosen is not None and (chosen == "@" or _BAD_REVISION.search(chosen)):
        raise CheckpointError(
            f"{text}: {chosen!r} is not a revision name (a branch, tag or commit: no '..', spaces, "
            "leading '/' or '.', or any of ~^:?*[\\)"
        )
    return HubId(repo_id, chosen)


def hub_offline() -> bool:
    """Whether ``huggingface_hub`` is in offline mode (``HF_HUB_OFFLINE=1``): only its cache is read."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# ---------------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------------


def download(hub_id: HubId, filename: str, *, what: str = "files") -> Path | None:
    """A repository file through the Hugging Face cache, or None when the repository has no such file.

    Offline, a file that is not cached counts as absent. Repository-level failures (unknown or gated
    repository, unknown revision, the Hub unreachable) raise a one-line :class:`CheckpointError`; ``what``
    names what was being fetched in those messages.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=hub_id.repo_id, filename=filename, revision=hub_id.revision))
    except LocalEntryNotFoundError as exc:
        if hub_offline():
            return None
        raise CheckpointError(hub_error_message(hub_id, exc, what)) from None
    except EntryNotFoundError:
        return None
    except Exception as exc:
        raise CheckpointError(hub_error_message(hub_id, exc, what)) from None


def hub_error_message(hub_id: HubId | str, exc: BaseException, what: str = "files") -> str:
    """One line saying why a Hub request failed and what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = str(hub_id)
    repo = hub_id.repo_id if isinstance(hub_id, HubId) else name
    if isinstance(exc, GatedRepoError):
        return (
            f"{name}: a gated repository: accept its access conditions on its Hub page "
            f"(https://huggingface.co/{repo}), then {_LOGIN_HINT}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return f"{name}: no such repository on the Hugging Face Hub (if it is private, {_LOGIN_HINT})"
    if isinstance(exc, RevisionNotFoundError):
        revision = hub_id.revision if isinstance(hub_id, HubId) else None
        return f"{name}: revision {revision!r} does not exist in {repo}"
    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError)) and hub_offline():
        return (
            f"{name}: the {what} are not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            f"downloading; fetch them on a machine with network access (`hf download {repo}`) or pass a "
            "local folder"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return (
            f"{name}: the Hugging Face Hub cannot be reached and the {what} are not in the local cache "
            "(check the network, proxy or HF_ENDPOINT), or pass a local folder"
        )
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return f"{name}: the Hub refused access ({status}); {_LOGIN_HINT} with a token allowed on {repo}"
        return f"{name}: the Hugging Face Hub answered {status}: {_first_line(exc)}"
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or "Connect" in type(exc).__name__:
        return f"{name}: the Hugging Face Hub cannot be reached ({type(exc).__name__}: {_first_line(exc)})"
    return f"{name}: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "no details"


def _pinned(hub_id: HubId, downloaded: Path) -> HubId:
    """``hub_id`` at the commit of a file just downloaded (``.../snapshots/<commit>/file``), so that every
    file of one checkpoint comes from the same commit even if the branch moves meanwhile."""
    snapshot = downloaded.parent
    if snapshot.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", snapshot.name):
        return HubId(hub_id.repo_id, snapshot.name)
    return hub_id


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a Hub repository id ``owner/name[@revision]`` (which, without the
    ``hf-hub:`` prefix, mfclip takes for a local path)."""
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    if text.lower().endswith(_WEIGHT_FILE_SUFFIXES):  # runs/last.ckpt is a file name, not a repository
        return False
    return bool(_REPO_ID.match(text.partition("@")[0]))


def missing_path_error(text: str, problem: str) -> CheckpointError:
    """The error for a local path that does not exist: one line naming it and ``problem`` (``no such
    checkpoint``), suggesting ``hf-hub:`` when the text reads as ``owner/name`` (the Hub is only consulted
    for names spelled that way)."""
    hint = ""
    if looks_like_repo_id(text):
        hint = f"; to load the Hugging Face Hub repository of that name, write {HUB_PREFIX}{text}"
    return CheckpointError(f"{text}: {problem} (not a local file or folder){hint}")


def resolve_checkpoint(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint for ``name_or_path``: the path itself, or the Hub snapshot folder of a Hub id.

    Only ``hf-hub:owner/name[@revision]`` reaches the Hub: it downloads ``config.json``, the weights file it
    names and ``README.md`` of one commit, and returns their folder in the Hugging Face cache. Anything
    else is a local path, returned unchanged (``~`` expanded); one that does not exist is an error, which
    suggests ``hf-hub:`` when the text reads as ``owner/name``.
    """
    text = str(name_or_path)
    if is_hub_id(text):
        return _download_checkpoint(parse_hub_id(text, revision))
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise missing_path_error(text, "no such checkpoint")
    if revision is not None:
        raise CheckpointError(f"{text}: a local checkpoint has no revisions (revision={revision!r})")
    return path


def _download_checkpoint(hub_id: HubId) -> Path:
    config = download(hub_id, CONFIG_NAME, what="checkpoint files")
    if config is None:
        if hub_offline():
            raise CheckpointError(hub_error_message(hub_id, _offline_error(), "checkpoint files"))
        raise CheckpointError(f"{hub_id}: not an mfclip checkpoint repository (it has no {CONFIG_NAME})")
    pinned = _pinned(hub_id, config)
    folder = config.parent
    try:
        document = read_checkpoint_config(folder)
    except CheckpointError as exc:
        raise CheckpointError(f"{hub_id}: not an mfclip checkpoint: {exc}") from None
    weights_name = checkpoint_weights_path(folder, document).name
    if download(pinned, weights_name, what="checkpoint files") is None:
        if hub_offline():
            raise CheckpointError(hub_error_message(hub_id, _offline_error(), f"weights ({weights_name})"))
        raise CheckpointError(f"{hub_id}: the repository lacks {weights_name}, which its {CONFIG_NAME} names")
    with contextlib.suppress(CheckpointError):  # the card is documentation; the checkpoint loads without it
        download(pinned, MODEL_CARD_NAME, what="model card")
    return folder


def _offline_error() -> Exception:
    from huggingface_hub.errors import LocalEntryNotFoundError

    return LocalEntryNotFoundError("not cached")


def fetch_clip_weights(hub_id: HubId) -> Path:
    """The folder (in the Hugging Face cache) of a Hub repository's CLIP weights: an open_clip repository
    (``open_clip_config.json`` and one weights file) or a transformers ``CLIPModel`` one (``config.json`` and
    ``model.safetensors`` / ``pytorch_model.bin`` or the shards of an index). Only those files are fetched."""
    what = "pretrained CLIP weights"
    config = download(hub_id, OPEN_CLIP_CONFIG, what=what)
    if config is not None:
        if _first_found(_pinned(hub_id, config), OPEN_CLIP_WEIGHT_FILES, what) is not None:
            return config.parent
    elif (config := download(hub_id, CONFIG_NAME, what=what)) is not None:
        pinned = _pinned(hub_id, config)
        if _first_found(pinned, HF_WEIGHT_FILES, what) is not None:
            return config.parent
        for index_name in HF_INDEX_FILES:
            index = download(pinned, index_name, what=what)
            if index is not None:
                for shard in shard_names(index):
                    if download(pinned, shard, what=what) is None:
                        raise CheckpointError(f"{hub_id}: shard {shard} listed in {index_name} is missing")
                return config.parent
    if hub_offline():
        raise CheckpointError(hub_error_message(hub_id, _offline_error(), what))
    raise CheckpointError(
        f"{hub_id}: no CLIP weights in the repository (looked for {OPEN_CLIP_CONFIG} or {CONFIG_NAME} with "
        "model.safetensors / pytorch_model.bin)"
    )


def fetch_timm_weights(hub_id: HubId) -> Path:
    """The folder (in the Hugging Face cache) of a timm model repository's weights: ``model.safetensors``
    (or ``pytorch_model.bin``) and, when the repository has one, its ``config.json`` (the architecture the
    weights are for), both from one commit. Only those files are fetched."""
    what = "timm weights"
    weights = _first_found(hub_id, TIMM_WEIGHT_FILES, what)
    if weights is None:
        if hub_offline():
            raise CheckpointError(hub_error_message(hub_id, _offline_error(), what))
        raise CheckpointError(
            f"{hub_id}: no timm weights in the repository (looked for {' / '.join(TIMM_WEIGHT_FILES)})"
        )
    with contextlib.suppress(CheckpointError):  # the architecture check is skipped without config.json
        download(_pinned(hub_id, weights), CONFIG_NAME, what=what)
    return weights.parent


def _first_found(hub_id: HubId, names: Sequence[str], what: str) -> Path | None:
    for name in names:
        found = download(hub_id, name, what=what)
        if found is not None:
            return found
    return None


def shard_names(index: Path) -> list[str]:
    """The weight files a shard index (``model.safetensors.index.json``) lists: plain file names beside it."""
    import json

    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no 'weight_map' in the shard index")
    shards = sorted({str(v) for v in weight_map.values()})
    for shard in shards:
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index}: shard name {shard!r} is not a file name beside the index")
    return shards


# ---------------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------------


@dataclass
class PushResult:
    """Where :func:`push_checkpoint` put a checkpoint."""

    repo_id: str
    revision: str
    commit: str
    url: str
    files: list[str] = field(default_factory=list)


def checkpoint_to_push(path: str | Path) -> Path:
    """The checkpoint directory ``path`` names: itself, or ``RUN/best`` for a training run directory."""
    path = Path(path)
    if path.is_dir() and not (path / CONFIG_NAME).exists() and is_checkpoint_dir(path / "best"):
        return path / "best"
    return path


def push_checkpoint(
    checkpoint: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    license: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Upload a checkpoint directory to a Hub model repository (created if needed) in one commit.

    The commit holds exactly the checkpoint's files: ``config.json``, the weights file it names (verified
    against its recorded size and SHA-256 first) and ``README.md``, whose Hub front matter (library, tags,
    licence, datasets, evaluation results, the synthetic-data flag) is written from the checkpoint's config
    and metadata. ``revision`` is a branch, created from ``main`` when it does not exist. ``private``
    applies when the repository is created. Credentials come from ``huggingface_hub`` (``hf auth login``,
    ``HF_TOKEN``) unless ``token`` is given.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from mfclip.models.model_card import card_with_front_matter

    directory = checkpoint_to_push(checkpoint)
    document = read_checkpoint_config(directory)
    weights = checkpoint_weights_path(directory, document)
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {weights.name} is missing")
    card_path = directory / MODEL_CARD_NAME
    for path in (directory / CONFIG_NAME, weights, card_path):
        _refuse_link_outside(directory, path)
    verify_file(weights, document.get("weights") or {}, CONFIG_NAME)
    target = parse_hub_id(repo_id if is_hub_id(repo_id) else f"{HUB_PREFIX}{repo_id}", revision)
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    card = card_with_front_matter(card, document, license=license)
    operations = [
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(directory / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=weights.name, path_or_fileobj=str(weights)),
        CommitOperationAdd(path_in_repo=MODEL_CARD_NAME, path_or_fileobj=card.encode("utf-8")),
    ]
    name = (document.get("metadata") or {}).get("name") or document["model"].get("name") or directory.name
    message = commit_message or f"Upload mfclip checkpoint {name}"
    if hub_offline():
        raise CheckpointError(
            f"{target}: HF_HUB_OFFLINE=1 forbids network access; unset it to push the checkpoint"
        )
    api = HfApi(token=token)
    branch = target.revision or "main"
    try:
        api.create_repo(target.repo_id, private=private, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(target.repo_id, branch=branch, exist_ok=True, repo_type="model")
        info = api.create_commit(
            target.repo_id, operations, commit_message=message, revision=branch, repo_type="model"
        )
    except Exception as exc:
        raise CheckpointError(hub_error_message(target, exc, "repository")) from None
    return PushResult(
        repo_id=target.repo_id,
        revision=branch,
        commit=str(info.oid),
        url=str(info.commit_url),
        files=[op.path_in_repo for op in operations],
    )


def _refuse_link_outside(directory: Path, path: Path) -> None:
    """Refuse to upload a file that is a symbolic link to somewhere outside the checkpoint directory.

    A Hugging Face cache snapshot (``snapshots/<commit>/``) may link into its repository's ``blobs/``.
    """
    if not path.is_symlink():
        return
    resolved, root = path.resolve(), directory.resolve()
    allowed = [root]
    if root.parent.name == "snapshots":
        allowed.append(root.parent.parent / "blobs")
    if not any(resolved.is_relative_to(folder) for folder in allowed):
        raise CheckpointError(
            f"{path}: a link to {resolved}, outside the checkpoint directory; push uploads only the "
            "checkpoint's own files (copy the file into the directory if it belongs there)"
        )

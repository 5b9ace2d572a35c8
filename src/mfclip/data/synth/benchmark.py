"""Write the synthetic benchmark to disk: images, manifest, protocol, README and ``synth.json``.

Output is a pure function of ``(seed, size, image_size)``: every image is made from its own random stream
derived from ``(seed, index)``, so the files are byte-identical whatever the number of worker processes.
Runs resume: images already on disk from an interrupted run with the same settings are kept, and every
file is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import yaml

from mfclip import __version__
from mfclip.data.synth.generators import SEEN_GENERATORS, SYNTH_GENERATORS, UNSEEN_GENERATORS
from mfclip.data.synth.plan import REAL, PlanEntry, build_plan
from mfclip.data.synth.synthesize import synthesize_jpeg
from mfclip.schema import MANIFEST_COLUMNS, SPLITS
from mfclip.utils.io import (
    TEMPORARY_PREFIX,
    TEMPORARY_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    remove_temporaries,
)

# Bump when a change to the generator alters any output byte.
SYNTH_VERSION = "1.0"
FORMAT_NAME = "mfclip-synthetic-benchmark"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
PROTOCOL_NAME = "synthetic"
_STATE_FILE = ".synth-state.json"
_OUTPUT_FILES = ("manifest.csv", "protocol.yaml", "README.md", "synth.json", "SHA256SUMS", _STATE_FILE)
_CHUNK = 8


class SynthError(ValueError):
    """Invalid settings or an output directory that cannot hold this benchmark."""


@dataclass(frozen=True)
class SynthResult:
    """Where a generated benchmark lies and what this run did."""

    out_dir: Path
    manifest_path: Path
    protocol_path: Path
    readme_path: Path
    info_path: Path
    num_images: int
    generated: int
    skipped: int
    seconds: float


def protocol_dict() -> dict[str, object]:
    """The benchmark's cross-generator protocol (the content of ``protocol.yaml``)."""
    seen, unseen = list(SEEN_GENERATORS), list(UNSEEN_GENERATORS)
    return {
        "name": PROTOCOL_NAME,
        "description": (
            "SYNTHETIC benchmark (procedurally rendered faces, not real people): train and select on "
            "seen generators, test on seen and held-out unseen generators."
        ),
        "synthetic": True,
        "manifest": "manifest.csv",
        "train": {"split": "train", "generators": list(seen), "include_real": True},
        "val": {"split": "val", "generators": list(seen), "include_real": True},
        "test": {
            "seen": {"split": "test", "generators": list(seen), "include_real": True},
            "unseen": {"split": "test", "generators": unseen, "include_real": True},
        },
    }


def protocol_yaml() -> str:
    header = (
        "# Protocol of the mfclip SYNTHETIC face-forgery benchmark (written by `mfclip synth`).\n"
        "# `manifest` is relative to this file. Each set selects manifest rows of one split: the fakes of\n"
        "# the listed generators, plus that split's real images when include_real is true.\n"
    )
    return header + yaml.safe_dump(protocol_dict(), sort_keys=False, default_flow_style=None, width=100)


def _settings(seed: int, size: int, image_size: int) -> dict[str, object]:
    return {
        "format": FORMAT_NAME,
        "version": SYNTH_VERSION,
        "seed": seed,
        "size": size,
        "image_size": image_size,
    }


def check_settings(seed: int, size: int, image_size: int, workers: int | None = None) -> None:
    """Refuse settings :func:`generate_benchmark` cannot use (:class:`SynthError` naming the setting)."""
    from mfclip.data.synth.plan import MAX_SIZE, MIN_SIZE

    if not isinstance(seed, int) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise SynthError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    if (
        not isinstance(image_size, int)
        or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE
        or image_size % 8
    ):
        raise SynthError(
            f"image_size must be a multiple of 8 between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, "
            f"got {image_size!r}"
        )
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise SynthError(f"workers must be a positive integer, got {workers!r}")


def _read_settings(out_dir: Path) -> dict[str, object] | None:
    import json

    for name in (_STATE_FILE, "synth.json"):
        path = out_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SynthError(f"{path}: unreadable benchmark settings ({exc})") from None
            return {key: data.get(key) for key in ("format", "version", "seed", "size", "image_size")}
    return None


def _prepare_directory(out_dir: Path, settings: dict[str, object], overwrite: bool) -> None:
    existing = _read_settings(out_dir) if out_dir.is_dir() else None
    if existing is not None and existing != settings:
        if not overwrite:
            raise SynthError(
                f"{out_dir}: holds a synthetic benchmark made with other settings {existing}; "
                f"use another directory or overwrite=True (--overwrite)"
            )
        shutil.rmtree(out_dir / "images", ignore_errors=True)
        for name in _OUTPUT_FILES:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
    elif existing is None and out_dir.is_dir() and any(out_dir.iterdir()):
        raise SynthError(
            f"{out_dir}: directory is not empty and holds no synthetic benchmark; use an empty one"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out_dir / "images", recursive=True)  # left by a killed run
    atomic_write_json(out_dir / _STATE_FILE, settings)


def _is_complete_jpeg(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            if handle.read(2) != b"\xff\xd8":
                return False
            handle.seek(-2, os.SEEK_END)
            return handle.read(2) == b"\xff\xd9"
    except OSError:
        return False


def _write_image(path: Path, data: bytes) -> None:
    """Temporary file + rename: a file at ``path`` is always complete (no fsync per image: an image
    lost to a power cut is caught by the JPEG check on resume and made again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _generate_chunk(out_dir: str, seed: int, image_size: int, entries: Sequence[PlanEntry]) -> int:
    root = Path(out_dir)
    for entry in entries:
        _write_image(root / entry.relative_path, synthesize_jpeg(entry, seed, image_size))
    return len(entries)


def _default_workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def _chunks(entries: Sequence[PlanEntry], size: int) -> Iterator[list[PlanEntry]]:
    for start in range(0, len(entries), size):
        yield list(entries[start : start + size])


def _run(
    out_dir: Path, seed: int, image_size: int, pending: list[PlanEntry], workers: int, progress: bool
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(pending), desc="synthetic benchmark", unit="img", disable=not progress)
    try:
        if workers == 1 or len(pending) <= _CHUNK:
            for chunk in _chunks(pending, _CHUNK):
                bar.update(_generate_chunk(str(out_dir), seed, image_size, chunk))
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            queue = _chunks(pending, _CHUNK)
            running = set()
            for chunk in queue:  # keep a bounded number of chunks in flight
                running.add(pool.submit(_generate_chunk, str(out_dir), seed, image_size, chunk))
                if len(running) >= 4 * workers:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        bar.update(future.result())
            for future in running:
                bar.update(future.result())
    finally:
        bar.close()


def _manifest_csv(plan: Sequence[PlanEntry]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for entry in plan:
        writer.writerow(entry.manifest_row())
    return buffer.getvalue()


def _counts(plan: Sequence[PlanEntry]) -> dict[str, dict[str, int]]:
    counter = Counter((entry.split, entry.generator) for entry in plan)
    names = [REAL] + [g.name for g in SYNTH_GENERATORS]
    return {
        split: {name: counter[(split, name)] for name in names if counter[(split, name)]} for split in SPLITS
    }


def _info(settings: dict[str, object], plan: Sequence[PlanEntry]) -> dict[str, object]:
    from mfclip.data.synth.camera import JPEG_QUALITY_RANGE

    return {
        **settings,
        "synthetic": True,
        "mfclip_version": __version__,
        "num_images": len(plan),
        "image_format": {"type": "jpeg", "quality": list(JPEG_QUALITY_RANGE), "chroma_subsampling": "4:2:0"},
        "generators": [g.as_dict() for g in SYNTH_GENERATORS],
        "counts": _counts(plan),
        "files": {
            "manifest": "manifest.csv",
            "protocol": "protocol.yaml",
            "checksums": "SHA256SUMS",
        },
    }


def _readme(settings: dict[str, object], plan: Sequence[PlanEntry]) -> str:
    counts = _counts(plan)
    lines = [
        "# mfclip SYNTHETIC face-forgery benchmark",
        "",
        "**This is a SYNTHETIC benchmark. None of these images shows a real person or comes from a real",
        'camera or a real generative model.** "Real" images are procedurally rendered cartoon faces passed',
        'through a simulated camera (sensor noise, Bayer demosaicing, JPEG); "fakes" come from simulated',
        "generators that imitate the traces of diffusion models and GANs. Use it to test pipelines and to",
        "compare detectors relative to each other; never report its numbers as results on real faces.",
        "",
        f"- seed {settings['seed']}, {settings['size']} images of "
        f"{settings['image_size']}x{settings['image_size']} pixels, JPEG (quality 70-95, 4:2:0) for all",
        f"- generator version {settings['version']}; regenerate byte-identically with",
        f"  `mfclip synth --out DIR --seed {settings['seed']} --size {settings['size']} "
        f"--image-size {settings['image_size']}`",
        "- `manifest.csv`: one row per image (path relative to this folder, label 0 real / 1 fake, split,",
        "  dataset, forgery_type, family, generator, video_id = one synthetic person seen by one generator)",
        "- `protocol.yaml`: train and validate on the seen generators, test on seen and unseen ones",
        "- `SHA256SUMS`: checksums of every image (`sha256sum -c SHA256SUMS`)",
        "",
        "| generator | forgery type | family | protocol | train | val | test |",
        "|---|---|---|---|---|---|---|",
        "| real (simulated camera) | - | - | both | "
        + " | ".join(str(counts[split].get(REAL, 0)) for split in SPLITS)
        + " |",
    ]
    for g in SYNTH_GENERATORS:
        row = [counts[split].get(g.name, 0) for split in SPLITS]
        lines.append(
            f"| {g.name} | {g.forgery_type} | {g.family} | {'seen' if g.seen else 'unseen'} | "
            f"{row[0]} | {row[1]} | {row[2]} |"
        )
    lines += ["", "Generators:", ""]
    lines += [f"- **{g.name}**: {g.description}." for g in SYNTH_GENERATORS]
    return "\n".join(lines) + "\n"


def _checksums(out_dir: Path, plan: Sequence[PlanEntry]) -> str:
    lines = []
    for entry in sorted(plan, key=lambda e: e.relative_path):
        digest = hashlib.sha256((out_dir / entry.relative_path).read_bytes()).hexdigest()
        lines.append(f"{digest}  {entry.relative_path}")
    return "\n".join(lines) + "\n"


def generate_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    size: int = 2000,
    image_size: int = 224,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthResult:
    """Generate (or finish generating) the SYNTHETIC benchmark in ``out_dir``.

    Writes ``images/<split>/<real|generator>/<index>.jpg``, ``manifest.csv``, ``protocol.yaml``,
    ``README.md``, ``synth.json`` and ``SHA256SUMS``. Same ``(seed, size, image_size)`` → byte-identical
    files whatever ``workers``. Images already present from an interrupted run with the same settings are
    kept; a directory holding a benchmark with other settings is refused unless ``overwrite``.
    """
    check_settings(seed, size, image_size, workers)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    settings = _settings(seed, size, image_size)
    _prepare_directory(out_dir, settings, overwrite)
    plan = build_plan(seed, size)
    pending = [entry for entry in plan if not _is_complete_jpeg(out_dir / entry.relative_path)]
    _run(out_dir, seed, image_size, pending, workers or _default_workers(), progress)

    manifest_path = out_dir / "manifest.csv"
    protocol_path = out_dir / "protocol.yaml"
    readme_path = out_dir / "README.md"
    info_path = out_dir / "synth.json"
    atomic_write_text(manifest_path, _manifest_csv(plan))
    atomic_write_text(protocol_path, protocol_yaml())
    atomic_write_text(readme_path, _readme(settings, plan))
    atomic_write_text(out_dir / "SHA256SUMS", _checksums(out_dir, plan))
    atomic_write_json(info_path, _info(settings, plan))
    (out_dir / _STATE_FILE).unlink(missing_ok=True)
    return SynthResult(
        out_dir=out_dir,
        manifest_path=manifest_path,
        protocol_path=protocol_path,
        readme_path=readme_path,
        info_path=info_path,
        num_images=len(plan),
        generated=len(pending),
        skipped=len(plan) - len(pending),
        seconds=time.perf_counter() - start,
    )

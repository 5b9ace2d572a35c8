"""ManifestDataset: items and batches, odd and broken files, corrupt-file policies across DataLoader
workers, augmentation determinism, and class-balanced sampling."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data_trees import EXIF_ROTATE_90_CW, write_bad_images, write_image
from mfclip.data.dataset import (
    CorruptPolicy,
    DroppedSample,
    ManifestDataset,
    TooManyCorruptFiles,
    collate_batch,
)
from mfclip.data.manifest import ManifestError
from mfclip.data.sampling import balanced_weights
from mfclip.data.transforms import AugmentConfig, TransformConfig
from mfclip.prompts import load_prompt_set, tokenize


def manifest(
    paths: list[str], labels: list[int] | None = None, generators: list[str] | None = None
) -> pd.DataFrame:
    labels = labels if labels is not None else [i % 2 for i in range(len(paths))]
    return pd.DataFrame(
        {
            "path": paths,
            "label": labels,
            "split": "train",
            "dataset": "toy",
            "forgery_type": "",
            "family": "",
            "generator": generators if generators is not None else ["SDXL" if lab else "" for lab in labels],
            "video_id": "",
        }
    )


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    for i in range(8):
        write_image(tmp_path / f"img/{i}.png", seed=i, size=20 + 4 * i)
    return tmp_path, manifest([f"img/{i}.png" for i in range(8)])


def test_items_and_batches(images) -> None:
    root, df = images
    dataset = ManifestDataset(df.iloc[2:], root, image_size=16)  # rows 2..7 keep their numbers
    item = dataset[0]
    assert set(item) == {"image", "label", "prompt_tokens", "prompt_mask", "index", "path"}
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert (item["index"], item["path"], item["label"]) == (2, "img/2.png", 0)
    row = df.iloc[2]
    texts, known = load_prompt_set().prompts_for(
        row.label, row.forgery_type, row.family, row.generator, row.dataset
    )
    assert torch.equal(item["prompt_tokens"], tokenize(texts))
    assert item["prompt_mask"].tolist() == known
    batch = collate_batch([dataset[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["label"].dtype == torch.int64 and batch["index"].tolist() == [2, 3, 4]
    assert batch["prompt_tokens"].shape == (3, 4, 77) and batch["prompt_tokens"].dtype == torch.int64
    assert batch["prompt_mask"].shape == (3, 4) and batch["prompt_mask"].dtype == torch.bool
    assert batch["path"] == ["img/2.png", "img/3.png", "img/4.png"] and batch["skipped"] == []
    fake = dataset[1]
    assert fake["label"] == 1 and fake["prompt_mask"].tolist() == [True, True, True, True]
    assert dataset.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_odd_image_modes_decode_to_rgb(tmp_path: Path) -> None:
    files = write_bad_images(tmp_path)
    names = ["cmyk", "sixteen_bit", "palette", "rgba", "grey"]
    df = manifest([files[n].name for n in names], labels=[0] * len(names))
    dataset = ManifestDataset(df, tmp_path, image_size=8)
    colours = {n: (dataset[i]["image"][:, 4, 4] * 255).round().tolist() for i, n in enumerate(names)}
    assert colours["cmyk"][0] > 240 and max(colours["cmyk"][1:]) < 15  # CMYK (0,255,255,0) is red
    assert all(abs(c - 128) <= 1 for c in colours["sixteen_bit"])  # 16-bit mid grey → 8-bit mid grey
    assert colours["palette"] == [0.0, 200.0, 0.0]
    assert colours["rgba"] == [0.0, 0.0, 0.0]  # fully transparent: composited on black
    assert colours["grey"] == [77.0, 77.0, 77.0]


def test_broken_files_are_dropped_with_clear_reasons(tmp_path: Path) -> None:
    files = write_bad_images(tmp_path)
    names = ["good", "truncated", "zero_byte", "not_image", "huge"]
    df = manifest([files[n].name for n in names])
    dataset = ManifestDataset(
        df,
        tmp_path,
        image_size=8,
        max_pixels=50_000,
        corrupt_policy=CorruptPolicy(action="drop", max_corrupt_fraction=None),
    )
    samples = [dataset[i] for i in range(len(names))]
    reasons = {s.path: s.reason for s in samples if isinstance(s, DroppedSample)}
    assert "corrupt or truncated" in reasons["truncated.png"]
    assert reasons["zero.png"] == "empty file (0 bytes)"
    assert reasons["notes.png"] == "not a recognised image format"
    assert "above the limit 50000" in reasons["huge.png"]
    batch = collate_batch(samples)
    assert batch["path"] == ["good.png"]
    assert [(index, path) for index, path, _ in batch["skipped"]] == [
        (1, "truncated.png"),
        (2, "zero.png"),
        (3, "notes.png"),
        (4, "huge.png"),
    ]
    assert collate_batch(samples[1:]) is None
    assert dataset.corrupt.distinct == 4


def test_replace_policy_returns_next_readable_row(tmp_path: Path) -> None:
    files = write_bad_images(tmp_path)
    write_image(tmp_path / "other.png", seed=3)
    df = manifest(["good.png", files["truncated"].name, "other.png"])
    dataset = ManifestDataset(
        df, tmp_path, 8, corrupt_policy=CorruptPolicy(max_corrupt=1, max_corrupt_fraction=None)
    )
    assert dataset[1]["path"] == "other.png" and dataset[1]["index"] == 2
    assert dataset[1]["path"] == "other.png"  # the same corrupt file again is not a new one
    assert dataset.corrupt.distinct == 1


def test_limits_raise_naming_the_last_files(tmp_path: Path) -> None:
    files = write_bad_images(tmp_path)
    df = manifest(["good.png", files["truncated"].name, files["grey"].name, files["zero_byte"].name])
    dataset = ManifestDataset(
        df, tmp_path, 8, corrupt_policy=CorruptPolicy(max_corrupt=1, max_corrupt_fraction=None)
    )
    assert dataset[1]["path"] == "grey.png"
    with pytest.raises(
        TooManyCorruptFiles,
        match=r"(?s)2 distinct corrupt files, above max_corrupt=1.*truncated\.png.*zero\.png",
    ):
        dataset[3]
    strict = ManifestDataset(df, tmp_path, 8, corrupt_policy=CorruptPolicy(action="raise"))
    with pytest.raises(TooManyCorruptFiles, match=r"(?s)'raise'.*truncated\.png: corrupt or truncated"):
        strict[1]
    policy = CorruptPolicy(max_corrupt_fraction=0.25, min_reads_for_fraction=4)
    fraction = ManifestDataset(df, tmp_path, 8, corrupt_policy=policy)
    fraction[1]  # 1 of 4 = 25 %: allowed
    with pytest.raises(TooManyCorruptFiles, match="2 of 4 files are corrupt"):
        fraction[3]


def test_corrupt_count_is_shared_by_dataloader_workers(tmp_path: Path) -> None:
    files = write_bad_images(tmp_path)
    for i in range(5):
        write_image(tmp_path / f"ok{i}.png", seed=i)
    paths = ["ok0.png", files["truncated"].name, "ok1.png", "ok2.png", files["zero_byte"].name, "ok3.png"]
    paths += [files["not_image"].name, "ok4.png"]
    df = manifest(paths)
    lenient = ManifestDataset(df, tmp_path, 8, corrupt_policy=CorruptPolicy(action="drop", max_corrupt=10))
    loader = DataLoader(lenient, batch_size=2, num_workers=2, collate_fn=collate_batch)
    seen = [p for batch in loader if batch is not None for p in batch["path"]]
    assert sorted(seen) == [f"ok{i}.png" for i in range(5)]
    assert lenient.corrupt.distinct == 3  # counted in the workers, visible in the main process
    strict = ManifestDataset(df, tmp_path, 8, corrupt_policy=CorruptPolicy(action="drop", max_corrupt=2))
    loader = DataLoader(strict, batch_size=2, num_workers=2, collate_fn=collate_batch)
    iterator = iter(loader)
    try:
        with pytest.raises(TooManyCorruptFiles, match="3 distinct corrupt files, above max_corrupt=2"):
            list(iterator)  # raised in a worker, re-raised in the main process with its own type
    finally:
        # Stop the workers now: left to the garbage collector, PyTorch waits 5 s per worker.
        iterator._shutdown_workers()


def test_augmentation_repeats_under_a_seeded_loader(images) -> None:
    root, df = images
    config = TransformConfig(augment=AugmentConfig(hflip_p=0.5, jpeg_p=0.5, blur_p=0.5, noise_p=0.5))
    dataset = ManifestDataset(df, root, 16, transform=config, train=True)

    def run(seed: int) -> torch.Tensor:
        loader = DataLoader(
            dataset,
            batch_size=4,
            num_workers=2,
            collate_fn=collate_batch,
            generator=torch.Generator().manual_seed(seed),
        )
        return torch.cat([batch["image"] for batch in loader])

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    in_process = [
        ManifestDataset(df, root, 16, transform=config, train=True, seed=5)[3]["image"] for _ in range(2)
    ]
    assert torch.equal(in_process[0], in_process[1])


def test_bad_manifest_rows_are_refused(images) -> None:
    root, df = images
    with pytest.raises(
        ManifestError,
        match=r"1 manifest row\(s\) are videos \(e\.g\. row 10: clip\.mp4\).*face preprocessing",
    ):
        ManifestDataset(pd.concat([df, manifest(["clip.mp4"], [1])], ignore_index=True), root, 8)
    with pytest.raises(ManifestError, match=r"row 2, column 'path'.*escapes"):
        ManifestDataset(manifest(["../x.png"]), root, 8)
    with pytest.raises(ManifestError, match="row 2, column 'label'"):
        ManifestDataset(manifest(["img/0.png"], ["maybe"]), root, 8)  # type: ignore[list-item]
    with pytest.raises(ManifestError, match="not a directory"):
        ManifestDataset(df, root / "nope", 8)
    with pytest.raises(ManifestError, match="no rows"):
        ManifestDataset(df.iloc[:0], root, 8)


def test_dataset_pickles_and_copies(images) -> None:
    root, df = images
    dataset = ManifestDataset(df, root, 8)
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[1]["image"], dataset[1]["image"]) and clone.path(5) == "img/5.png"
    assert copy.deepcopy(dataset)[2]["index"] == 2


def test_jpeg_draft_decoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(
        tmp_path / "big.jpg", quality=90
    )
    df = manifest(["big.jpg"], [0])
    fast = ManifestDataset(df, tmp_path, 32, transform=TransformConfig(jpeg_draft=True))[0]["image"]
    full = ManifestDataset(df, tmp_path, 32)[0]["image"]
    assert fast.shape == full.shape == (3, 32, 32)
    assert float((fast - full).abs().mean()) < 0.1


def test_balanced_weights() -> None:
    labels = np.array([0] * 10 + [1] * 90)
    generators = np.array([""] * 10 + ["A"] * 80 + ["B"] * 10, dtype=object)
    weights = balanced_weights(labels)
    assert np.isclose(weights[labels == 0].sum(), 0.5) and np.isclose(weights.sum(), 1.0)
    grouped = balanced_weights(labels, groups=generators)
    assert np.isclose(grouped[generators == "A"].sum(), 0.25) and np.isclose(
        grouped[generators == "B"].sum(), 0.25
    )
    with pytest.raises(ValueError, match="groups has 3 entries"):
        balanced_weights(labels, groups=["a", "b", "c"])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    from mfclip.data.decode import load_image

    files = write_bad_images(tmp_path, full_size=16)
    with Image.open(files["rotated"]) as stored:
        assert stored.size == (16, 8) and stored.getexif()[0x0112] == EXIF_ROTATE_90_CW
    pixels = np.asarray(load_image(files["rotated"]))
    assert pixels.shape == (16, 8, 3)  # height and width swapped
    # Left half black, right half white, turned 90 degrees clockwise: black on top, white below.
    assert pixels[:6].max() < 40 and pixels[10:].min() > 215

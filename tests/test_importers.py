"""Importers on miniature trees with each dataset's real naming; skipped-file logs; the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from data_trees import (
    NON_UTF8_DISPLAY,
    build_celebdf_deepfakebench_tree,
    build_celebdf_tree,
    build_deepfakebench_tree,
    build_dfd_deepfakebench_json,
    build_dfdc_tree,
    build_diff_tree,
    build_diffusionface_tree,
    build_ffpp_c0_tree,
    build_ffpp_deepfakebench_tree,
    build_ffpp_tree,
    build_folder_tree,
    build_folder_tree_with_link_problems,
    build_folder_tree_with_odd_names,
    build_genface_tree,
    deepfakebench_json_for_celebdf,
    write_bad_images,
    write_image,
)
from mfclip.cli.errors import run_app
from mfclip.data.importers import ImporterError, import_dataset, list_importers, run_import
from mfclip.data.manifest import ManifestError, load_manifest, read_manifest, validate_manifest


def skipped_reasons(result) -> dict[str, str]:
    return {s.path: s.reason for s in result.skipped}


def by_path(result) -> dict[str, dict]:
    return {row["path"]: row for row in result.rows}


def test_registry_lists_every_importer() -> None:
    from mfclip.cli.data import IMPORTERS_HELP

    expected = {
        "diff",
        "diffusionface",
        "genface",
        "ffpp",
        "dfd",
        "celebdf",
        "dfdc",
        "deepfakebench",
        "folder",
    }
    assert set(list_importers()) == expected
    assert {name.strip() for name in IMPORTERS_HELP.split(",")} == expected
    with pytest.raises(ImporterError, match="unknown dataset importer 'dif'; did you mean 'diff'"):
        import_dataset("dif", ".")


def test_diff(tmp_path: Path) -> None:
    expected = build_diff_tree(tmp_path)
    result = import_dataset("diff", tmp_path)
    rows = by_path(result)
    assert sum(r["label"] == 1 for r in rows.values()) == expected["fake"]
    assert sum(r["label"] == 0 for r in rows.values()) == expected["real"]
    lora = rows["train/i2i/LoRA/LoRA/id_0278/lora_020_000.png"]
    assert (lora["generator"], lora["forgery_type"], lora["family"], lora["subset"]) == (
        "LoRA",
        "entire_synthesis",
        "diffusion",
        "i2i",
    )
    assert rows["val/fs/DCFace/id_0509/002.jpg"]["forgery_type"] == "face_swap"
    codiff = next(r for p, r in rows.items() if p.startswith("test/fe/CoDiff"))
    assert (codiff["split"], codiff["forgery_type"]) == ("test", "attribute_manipulation")
    assert rows["val/real/00003.png"]["split"] == "val"
    reasons = skipped_reasons(result)
    assert reasons["train/real/notes.txt"] == "not an image file"
    assert reasons["train/real/00005.png"] == "empty file (0 bytes)"
    assert "unexpected folder" in reasons["train/extra/"]
    assert len(reasons) == expected["skipped"]


def test_diff_without_split_folders_needs_a_split(tmp_path: Path) -> None:
    write_image(tmp_path / "real/00001.png")
    write_image(tmp_path / "t2i/Midjourney/id_0001/001.png")
    with pytest.raises(ImporterError, match=r"2 of 2 rows have no split.*--default-split"):
        import_dataset("diff", tmp_path)
    result = import_dataset("diff", tmp_path, default_split="test")
    assert {r["split"] for r in result.rows} == {"test"}


def test_folder(tmp_path: Path) -> None:
    expected = build_folder_tree(tmp_path)
    result = import_dataset("folder", tmp_path, dataset_name="mine")
    rows = by_path(result)
    assert sum(r["label"] == 0 for r in rows.values()) == expected["real"]
    stylegan = rows["train/fake/stylegan3/d.png"]  # canonical spelling from the prompt set
    assert (stylegan["generator"], stylegan["family"], stylegan["forgery_type"]) == (
        "StyleGAN3",
        "gan",
        "entire_synthesis",
    )
    assert rows["val/1_fake/MyGen/sub/f.png"]["generator"] == "MyGen"
    assert rows["test/fake/g.png"]["generator"] == ""
    assert rows["val/0_real/e.png"] == {
        **rows["val/0_real/e.png"],
        "label": 0,
        "split": "val",
        "dataset": "mine",
    }
    assert skipped_reasons(result) == {"README.txt": "not under a real/ or fake/ folder"}
    assert any("MyGen" in w for w in result.warnings)


def test_genface_from_csv(tmp_path: Path) -> None:
    csv_path = build_genface_tree(tmp_path)
    result = import_dataset("genface", tmp_path, csv=csv_path)
    rows = by_path(result)
    assert rows["images/real/001.png"]["label"] == 0
    ia = rows["images/IAFaces/003.png"]
    assert (ia["generator"], ia["forgery_type"], ia["family"], ia["split"]) == (
        "IA-FaceS",
        "attribute_manipulation",
        "gan",
        "test",
    )
    assert rows["images/DDPM/002.png"]["family"] == "diffusion"
    assert rows["images/Mystery/004.png"]["forgery_type"] == ""
    reasons = skipped_reasons(result)
    assert reasons["images/missing.png"] == "file not found"
    assert reasons["genface.csv line 7"] == "empty path"
    assert "escapes the dataset root" in reasons["../outside.png"]
    assert "split must be train, val or test, got 'sometimes'" in reasons["images/DDPM/002.png"]
    with pytest.raises(ImporterError, match="needs --csv"):
        import_dataset("genface", tmp_path)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,gen\na.png,DDPM\n")
    with pytest.raises(ImporterError, match=r"missing column.*path, generator"):
        import_dataset("genface", tmp_path, csv=bad_csv)


def test_ffpp_videos_with_official_splits(tmp_path: Path) -> None:
    build_ffpp_tree(tmp_path)
    result = import_dataset("ffpp", tmp_path)
    rows = by_path(result)
    assert len(rows) == 11
    real = rows["original_sequences/youtube/c23/videos/002.mp4"]
    assert (real["label"], real["split"], real["video_id"], real["compression"]) == (
        0,
        "test",
        "youtube/c23/002",
        "c23",
    )
    fake = rows["manipulated_sequences/Deepfakes/c23/videos/001_000.mp4"]
    assert (fake["split"], fake["generator"], fake["forgery_type"]) == ("train", "Deepfakes", "face_swap")
    assert fake["video_id"] == "Deepfakes/c23/001_000"
    assert (
        rows["manipulated_sequences/Face2Face/c23/videos/002_003.mp4"]["forgery_type"]
        == "attribute_manipulation"
    )
    assert rows["original_sequences/youtube/c23/videos/004.mp4"]["split"] == "val"
    reasons = skipped_reasons(result)
    assert "compression c40 not imported" in reasons["original_sequences/youtube/c40/"]
    assert (
        reasons["manipulated_sequences/Deepfakes/masks/"]
        == "folder ignored (manipulation masks, not samples)"
    )
    assert "mfclip import dfd" in reasons["original_sequences/actors/"]
    every = import_dataset("ffpp", tmp_path, compression="all")
    assert len(every.rows) == 12
    with pytest.raises(ImporterError, match="media must be auto, videos or frames, got 'vids'"):
        import_dataset("ffpp", tmp_path, media="vids")
    with pytest.raises(ImporterError, match=r"compression must be one of raw, c23, c40 \(c0 = raw\) or all"):
        import_dataset("ffpp", tmp_path, compression="c99")


def test_ffpp_frames_and_missing_splits(tmp_path: Path) -> None:
    build_ffpp_tree(tmp_path, frames=True)
    result = import_dataset("ffpp", tmp_path)
    assert len(result.rows) == 22
    assert all(r["path"].endswith(".png") for r in result.rows)
    first = by_path(result)["original_sequences/youtube/c23/frames/000/0001.png"]
    assert (first["video_id"], first["split"]) == ("youtube/c23/000", "train")
    for name in ("train", "val", "test"):
        (tmp_path / "splits" / f"{name}.json").unlink()
    with pytest.raises(ImporterError, match=r"split files not found: looked for train\.json, val\.json"):
        import_dataset("ffpp", tmp_path)
    with pytest.raises(ImporterError, match=r"split files not found in .*splits: none of train\.json"):
        import_dataset("ffpp", tmp_path, split_dir=tmp_path / "splits")


def test_ffpp_partly_extracted_frames_fall_back_to_the_video_per_video(tmp_path: Path) -> None:
    build_ffpp_deepfakebench_tree(tmp_path)
    result = import_dataset("ffpp", tmp_path)
    media = {}
    for row in result.rows:
        media.setdefault(row["video_id"], set()).add("video" if row["path"].endswith(".mp4") else "frames")
    assert media == {
        "youtube/c23/000": {"frames"},
        "youtube/c23/001": {"frames"},
        "youtube/c23/002": {"frames"},
        "youtube/c23/003": {"video"},  # no face found: no frames, so its video is imported
        "youtube/c23/004": {"video"},
        "Deepfakes/c23/000_001": {"frames"},
        "Deepfakes/c23/002_003": {"video"},
        "Deepfakes/c23/003_002": {"frames"},
    }
    splits = {row["video_id"]: row["split"] for row in result.rows}
    assert (splits["youtube/c23/003"], splits["youtube/c23/004"], splits["Deepfakes/c23/002_003"]) == (
        "test",
        "val",
        "test",
    )
    reasons = skipped_reasons(result)
    c23 = "manipulated_sequences/Deepfakes/c23"
    assert reasons[f"{c23}/videos/001_000.mp4"] == (
        "in train.json, but neither its frames nor its video file is here"
    )
    assert "in val.json" in reasons["original_sequences/youtube/c23/videos/999.mp4"]
    assert {f"{c23}/videos/004_999.mp4", f"{c23}/videos/999_004.mp4"} <= set(reasons)
    assert reasons[f"{c23}/videos/"] == "2 of 3 videos not imported: their extracted frames are"
    assert reasons["original_sequences/youtube/c23/videos/"] == (
        "3 of 5 videos not imported: their extracted frames are"
    )
    assert reasons[f"{c23}/masks/"] == "folder ignored (manipulation masks, not samples)"
    assert reasons[f"{c23}/landmarks/"] == "folder ignored (face landmarks, not samples)"
    assert reasons["manipulated_sequences/Deepfakes/masks/"] == (
        "folder ignored (manipulation masks, not samples)"
    )
    assert not any("video" in row["path"] and row["path"].endswith(".png") for row in result.rows)
    frames_only = import_dataset("ffpp", tmp_path, media="frames")
    assert {r["video_id"] for r in frames_only.rows} == {k for k, v in media.items() if v == {"frames"}}
    assert (
        "no extracted frames" in skipped_reasons(frames_only)["original_sequences/youtube/c23/videos/003.mp4"]
    )


def test_ffpp_c0_is_raw_and_ignored_entries_are_listed(tmp_path: Path) -> None:
    build_ffpp_c0_tree(tmp_path)
    result = import_dataset("ffpp", tmp_path, compression="raw")
    rows = by_path(result)
    real = rows["original_sequences/youtube/c0/images/000/0000.png"]
    assert (real["compression"], real["video_id"], real["split"]) == ("raw", "youtube/raw/000", "train")
    assert rows["manipulated_sequences/Face2Face/c0/images/000_001/0001.png"]["generator"] == "Face2Face"
    assert len(import_dataset("ffpp", tmp_path, compression="c0").rows) == len(result.rows) == 4
    reasons = skipped_reasons(result)
    assert reasons["downloaded_videos/"].startswith("folder ignored (the source YouTube videos")
    assert reasons["FaceForensics++_c23.zip"] == "archive, not imported (extract it to import what it holds)"
    with pytest.raises(ImporterError, match=r"no c23/ folder \(found c0\)"):
        import_dataset("ffpp", tmp_path)


def test_ffpp_with_one_split_file_missing_uses_the_other_two(tmp_path: Path) -> None:
    build_ffpp_tree(tmp_path)
    (tmp_path / "splits" / "val.json").unlink()
    result = import_dataset("ffpp", tmp_path)
    assert {r["split"] for r in result.rows} == {"train", "test"}
    assert len(result.rows) == 10  # the 11 c23 videos less the one of val (004)
    assert skipped_reasons(result)["original_sequences/youtube/c23/videos/004.mp4"] == (
        "video 004 is not in the official split files (train.json, test.json (val.json not found))"
    )
    assert any("val.json not found; using train.json, test.json" in w for w in result.warnings)


def test_ffpp_bad_split_file(tmp_path: Path) -> None:
    build_ffpp_tree(tmp_path)
    (tmp_path / "splits" / "val.json").write_text('{"not": "pairs"}')
    with pytest.raises(ImporterError, match=r"val\.json: expected a list of \[id, id\] pairs"):
        import_dataset("ffpp", tmp_path)


def test_dfd(tmp_path: Path) -> None:
    build_ffpp_tree(tmp_path)
    result = import_dataset("dfd", tmp_path, default_split="test")
    labels = {r["path"].split("/")[1]: r["label"] for r in result.rows}
    assert labels == {"actors": 0, "DeepFakeDetection": 1}
    with pytest.raises(ImporterError, match="DFD has no official split"):
        import_dataset("dfd", tmp_path)


def test_celebdf(tmp_path: Path) -> None:
    build_celebdf_tree(tmp_path)
    result = import_dataset("celebdf", tmp_path)
    rows = by_path(result)
    assert rows["YouTube-real/00170.mp4"]["split"] == "test"
    assert rows["Celeb-synthesis/id0_id16_0004.mp4"] == {
        **rows["Celeb-synthesis/id0_id16_0004.mp4"],
        "label": 1,
        "split": "test",
        "forgery_type": "face_swap",
        "video_id": "Celeb-synthesis/id0_id16_0004",
    }
    assert rows["Celeb-real/id0_0001.mp4"]["split"] == "train"
    assert any("Celeb-real/id9_9999" in w for w in result.warnings)


def test_celebdf_frames(tmp_path: Path) -> None:
    build_celebdf_tree(tmp_path, frames=True)
    result = import_dataset("celebdf", tmp_path)
    assert len(result.rows) == 12
    assert {r["video_id"] for r in result.rows if r["split"] == "test"} == {
        "YouTube-real/00170",
        "Celeb-synthesis/id0_id16_0004",
    }


def test_celebdf_deepfakebench_layout(tmp_path: Path) -> None:
    build_celebdf_deepfakebench_tree(tmp_path)
    result = import_dataset("celebdf", tmp_path)
    media = {}
    for row in result.rows:
        kind = "video" if row["path"].endswith(".mp4") else "frames"
        media.setdefault((row["video_id"], row["split"], row["label"], row["forgery_type"]), set()).add(kind)
    assert media == {
        ("Celeb-real/id0_0000", "train", 0, ""): {"frames"},
        ("Celeb-real/id0_0001", "train", 0, ""): {"video"},
        ("YouTube-real/00170", "test", 0, ""): {"video"},  # no face found: its video
        ("YouTube-real/00171", "train", 0, ""): {"frames"},
        ("Celeb-synthesis/id0_id16_0004", "test", 1, "face_swap"): {"video"},
        ("Celeb-synthesis/id0_id1_0000", "train", 1, "face_swap"): {"frames"},
    }
    reasons = skipped_reasons(result)
    assert reasons["Celeb-synthesis/masks/"] == "folder ignored (manipulation masks, not samples)"
    assert reasons["Celeb-real/landmarks/"] == "folder ignored (face landmarks, not samples)"
    assert reasons["Celeb-real/videos/"] == "1 of 2 videos not imported: their extracted frames are"
    assert reasons["Celeb-real/id9_9999.mp4"] == (
        "in List_of_testing_videos.txt, but neither its frames nor its video file is here"
    )


def test_deepfakebench_json_labels_match_the_native_importers(tmp_path: Path) -> None:
    celebdf_root = tmp_path / "Celeb-DF-v2"
    build_celebdf_deepfakebench_tree(celebdf_root)
    celeb = import_dataset("deepfakebench", tmp_path, json_path=deepfakebench_json_for_celebdf(celebdf_root))
    native = import_dataset("celebdf", celebdf_root, media="frames")
    by_video = {(r["video_id"], r["label"], r["forgery_type"], r["split"]) for r in celeb.rows}
    assert {(v.split("/")[-1], lab, ft, sp) for v, lab, ft, sp in by_video} == {
        (r["video_id"].split("/")[-1], r["label"], r["forgery_type"], r["split"]) for r in native.rows
    }
    assert {r["dataset"] for r in celeb.rows} == {"celebdf"}
    dfd = import_dataset("deepfakebench", tmp_path, json_path=build_dfd_deepfakebench_json(tmp_path))
    assert {(r["label"], r["forgery_type"], r["split"]) for r in dfd.rows} == {
        (0, "", "test"),
        (1, "face_swap", "test"),
    }


def test_dfdc(tmp_path: Path) -> None:
    build_dfdc_tree(tmp_path)
    result = import_dataset("dfdc", tmp_path)
    rows = by_path(result)
    assert rows["dfdc_train_part_0/aaqaifqrwn.mp4"]["label"] == 1
    assert rows["dfdc_train_part_0/bbbbbbbbbb.mp4"]["label"] == 0
    assert rows["test/videos/cccccccccc.mp4"] == {
        **rows["test/videos/cccccccccc.mp4"],
        "label": 1,
        "split": "test",
    }
    assert rows["test/videos/dddddddddd.mp4"]["label"] == 0
    reasons = skipped_reasons(result)
    assert (
        reasons["dfdc_train_part_0/unlisted00.mp4"] == "video not listed in any metadata.json or labels.csv"
    )
    assert (
        "listed in metadata.json but not found"
        in reasons["dfdc_train_part_0/missingvid.mp4 (from dfdc_train_part_0/metadata.json)"]
    )
    assert "got 'MAYBE'" in reasons["dfdc_train_part_0/weirdlabel.mp4 (from dfdc_train_part_0/metadata.json)"]
    assert "dfdc_train_part_0/weirdlabel.mp4" not in reasons  # reported once, for its label


def test_celebdf_test_list_saved_with_a_byte_order_mark_keeps_its_first_video_in_test(tmp_path: Path) -> None:
    build_celebdf_tree(tmp_path)
    listed = (tmp_path / "List_of_testing_videos.txt").read_text(encoding="utf-8")
    (tmp_path / "List_of_testing_videos.txt").write_bytes(
        "\ufeff".encode() + listed.replace("\n", "\r\n").encode()
    )
    result = import_dataset("celebdf", tmp_path)
    assert by_path(result)["YouTube-real/00170.mp4"]["split"] == "test"  # the first line of the list
    assert not any("line 1" in warning for warning in result.warnings)


def test_dfdc_frame_folder_without_images_falls_back_to_the_video(tmp_path: Path) -> None:
    import numpy as np

    build_dfdc_tree(tmp_path)
    part = tmp_path / "dfdc_train_part_0"
    (part / "frames/aaqaifqrwn").mkdir(parents=True)
    np.save(part / "frames/aaqaifqrwn/landmarks.npy", np.zeros(3))  # no face found: no frame
    write_image(part / "frames/bbbbbbbbbb/000.png")
    for frame in ("000", "001", "002"):  # DeepfakeBench's landmarks beside the frames
        (part / "landmarks/bbbbbbbbbb").mkdir(parents=True, exist_ok=True)
        np.save(part / f"landmarks/bbbbbbbbbb/{frame}.npy", np.zeros(3))
    result = import_dataset("dfdc", tmp_path)
    rows = by_path(result)
    assert rows["dfdc_train_part_0/aaqaifqrwn.mp4"]["label"] == 1
    assert "dfdc_train_part_0/frames/bbbbbbbbbb/000.png" in rows
    assert "dfdc_train_part_0/bbbbbbbbbb.mp4" not in rows  # its frames are imported instead
    reasons = skipped_reasons(result)
    assert reasons["dfdc_train_part_0/landmarks/"] == "folder ignored (face landmarks, not samples)"
    assert not any(path.startswith("dfdc_train_part_0/landmarks/bbbbbbbbbb") for path in reasons)


def test_split_fractions_are_checked_even_when_the_layout_gives_every_split(tmp_path: Path) -> None:
    build_folder_tree(tmp_path)
    for fractions in ((0.5, 0.6, 0.1), (-1.0, 1.0, 1.0), (float("nan"), 0.5, 0.5)):
        with pytest.raises(ManifestError, match="split fractions must be three non-negative numbers"):
            import_dataset("folder", tmp_path, split_fractions=fractions)


def test_deepfakebench_json(tmp_path: Path) -> None:
    json_path = build_deepfakebench_tree(tmp_path)
    result = import_dataset("deepfakebench", tmp_path, json_path=json_path)
    rows = by_path(result)
    assert len(rows) == 5
    windows = rows["FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/002_006/000.png"]
    assert (windows["split"], windows["generator"], windows["forgery_type"], windows["dataset"]) == (
        "test",
        "Deepfakes",
        "face_swap",
        "ffpp",
    )
    assert (windows["subset"], windows["compression"], windows["video_id"]) == (
        "FF-DF",
        "c23",
        "FF-DF/c23/002_006",
    )
    real = rows["FaceForensics++/original_sequences/youtube/c23/frames/002/001.png"]
    assert (real["label"], real["split"]) == (0, "test")
    reasons = skipped_reasons(result)
    assert reasons["FF-DF/FF-real/val/c23/002"] == "video also listed under split 'test'; kept there"
    missing = next(p for p in reasons if p.endswith("000_009/000.png"))
    assert "not found under" in reasons[missing]
    with pytest.raises(ImporterError, match="needs --json"):
        import_dataset("deepfakebench", tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ImporterError, match=r"broken\.json: not a readable JSON file"):
        import_dataset("deepfakebench", tmp_path, json_path=broken)


def test_diffusionface(tmp_path: Path) -> None:
    build_diffusionface_tree(tmp_path)
    result = import_dataset("diffusionface", tmp_path, default_split="train")
    rows = by_path(result)
    assert rows["MM-CelebA-HQ/0.jpg"]["label"] == 0
    assert (rows["Inpaint/SD_inpaint/3.png"]["forgery_type"], rows["Inpaint/SD_inpaint/3.png"]["subset"]) == (
        "attribute_manipulation",
        "Inpaint",
    )
    assert rows["DiffSwap/DiffSwap/4.png"]["forgery_type"] == "face_swap"
    ddpm = rows["Unconditional/DDPM/test/5.png"]
    assert (ddpm["generator"], ddpm["split"], ddpm["family"]) == ("DDPM", "test", "diffusion")
    assert rows["DiffAE/6.png"]["forgery_type"] == "attribute_manipulation"  # from the generator table
    assert rows["Other_Model/7.png"]["forgery_type"] == ""
    assert any("Other_Model" in w for w in result.warnings)
    assert skipped_reasons(result) == {"Text2Img/SDXL/prompts.txt": "not an image file"}


@pytest.mark.parametrize("name", ["folder", "diff", "diffusionface"])
def test_empty_folder_says_no_images(tmp_path: Path, name: str) -> None:
    with pytest.raises(ImporterError, match=f"no images found under {tmp_path}"):
        import_dataset(name, tmp_path)


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    files = write_bad_images(tmp_path / "real")
    write_image(tmp_path / "fake/SDXL/ok.png")
    header = import_dataset("folder", tmp_path, default_split="train", max_pixels=50_000)
    reasons = {Path(p).stem: r for p, r in skipped_reasons(header).items()}
    assert reasons["zero"] == "empty file (0 bytes)"
    assert reasons["notes"] == "not a recognised image format"
    assert "400x300 = 120000 pixels, above the limit 50000" in reasons["huge"]
    assert "truncated" not in reasons  # a header check cannot see truncation...
    full = import_dataset("folder", tmp_path, default_split="train", max_pixels=50_000, verify="full")
    assert "corrupt or truncated" in {Path(p).stem: r for p, r in skipped_reasons(full).items()}["truncated"]
    kept = {Path(r["path"]).stem for r in full.rows}  # ...a full decode does; odd modes still decode
    assert kept == {"good", "cmyk", "sixteen", "palette", "rgba", "grey", "rotated", "ok"}
    none = import_dataset("folder", tmp_path, default_split="train", verify="none")
    assert {Path(s.path).stem for s in none.skipped} == {"zero"}
    assert len(files) == 11


def test_run_import_writes_manifest_and_skipped_log(tmp_path: Path) -> None:
    root = tmp_path / "data"
    build_diff_tree(root)
    out = tmp_path / "out" / "diff.parquet"
    result = run_import("diff", root, out)
    assert (
        result.manifest_path == out and result.skipped_path == tmp_path / "out" / "diff.parquet.skipped.csv"
    )
    df = load_manifest(out, root)
    assert len(df) == 13 and "subset" in df.columns
    assert validate_manifest(df, root=root).ok
    with result.skipped_path.open() as handle:
        logged = list(csv.DictReader(handle))
    assert {row["path"] for row in logged} == {"train/real/notes.txt", "train/real/00005.png", "train/extra/"}


def test_run_import_failure_still_writes_skipped_log(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/real").mkdir()
    (tmp_path / "data/real/a.png").write_bytes(b"")
    out = tmp_path / "m.csv"
    with pytest.raises(ImporterError, match=r"(?s)no images found.*1 × empty file.*m\.csv\.skipped\.csv"):
        run_import("folder", tmp_path / "data", out, default_split="test")
    assert not out.exists()
    assert "empty file (0 bytes)" in (tmp_path / "m.csv.skipped.csv").read_text()


def test_import_rejects_foreign_options_and_bad_root(tmp_path: Path) -> None:
    with pytest.raises(ImporterError, match="does not take option"):
        import_dataset("diff", tmp_path, csv="x.csv")
    with pytest.raises(ImporterError, match="is not a directory"):
        import_dataset("diff", tmp_path / "nope")


def test_split_fractions_assign_by_video(tmp_path: Path) -> None:
    build_celebdf_tree(tmp_path, frames=True)
    (tmp_path / "List_of_testing_videos.txt").unlink()
    result = import_dataset("celebdf", tmp_path, split_fractions=(0.5, 0.25, 0.25), split_seed=1)
    frame = pd.DataFrame(result.rows)
    assert frame.groupby("video_id")["split"].nunique().max() == 1
    assert set(frame["split"]) <= {"train", "val", "test"}


# --------------------------------------------------------------------------------------------------
# CLI


def cli(argv: list[str]) -> int:
    from mfclip.cli.main import app

    return run_app(app, argv)


def test_cli_import_validate_summary(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    build_ffpp_tree(root)
    out = tmp_path / "ffpp.csv"
    assert cli(["import", "ffpp", "--root", str(root), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 11 rows (5 real, 6 fake)" in printed and "ffpp.csv.skipped.csv" in printed
    assert cli(["manifest", "validate", str(out), "--root", str(root)]) == 0
    assert "no problems" in capsys.readouterr().out
    assert cli(["manifest", "summary", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "Deepfakes" in summary and "11 rows" in summary

    df = read_manifest(out)
    df.loc[3, "split"] = "tst"
    df.to_csv(out, index=False)
    assert cli(["manifest", "validate", str(out), "--root", str(root)]) == 2
    assert "row 5, column 'split'" in capsys.readouterr().out  # df row 3 is the file's 5th line


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert (
        cli(["import", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--no-progress"])
        == 2
    )
    assert f"no images found under {tmp_path}" in capsys.readouterr().err
    code = cli(
        ["import", "diff", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--csv", "x.csv"]
    )
    assert code == 2
    assert "--csv does not apply to the diff importer" in capsys.readouterr().err
    assert cli(["manifest", "validate", str(tmp_path / "missing.csv")]) == 2
    assert "manifest not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Awkward names, symbolic links, unreadable folders, output paths


def test_non_utf8_names_are_skipped_and_links_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    expected = build_folder_tree_with_odd_names(root, outside)
    out = tmp_path / "m.csv"
    result = run_import("folder", root, out, default_split="train")
    # Links are followed (datasets often live on other disks); paths stay relative to the root.
    assert sorted(by_path(result)) == [
        "fake/SDXL/b.png",
        "fake/linked/c.png",
        "real/a.png",
        "real/alias.png",
        "real/linked.png",
    ]
    assert len(result.rows) == expected["rows"]
    reasons = skipped_reasons(result)
    assert reasons[f"real/{NON_UTF8_DISPLAY}"] == "file name is not valid UTF-8"
    assert len(reasons) == expected["skipped"]
    logged = {
        row["path"]: row["reason"] for row in csv.DictReader(result.skipped_path.open(encoding="utf-8"))
    }
    assert logged == reasons


def test_link_problems_and_hidden_entries_are_listed_with_their_reasons(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    expected = build_folder_tree_with_link_problems(root, outside)
    result = run_import("folder", root, tmp_path / "m.csv", default_split="train")
    assert sorted(by_path(result)) == ["fake/SDXL/b.png", "fake/linked/c.png", "real/a.png"]
    logged = {
        row["path"]: row["reason"] for row in csv.DictReader(result.skipped_path.open(encoding="utf-8"))
    }
    assert logged == expected
    assert (
        len(set(logged.values())) == 5
    )  # cycles, second paths, broken links, link loops, hidden: each its own


def test_every_folder_walker_follows_the_same_rules(tmp_path: Path) -> None:
    """Importers, face preprocessing and predict find the same images in the same tree."""
    from mfclip.face.pipeline import sources_from_paths
    from mfclip.inference.predict import collect_inputs

    root, outside = tmp_path / "data", tmp_path / "outside"
    build_folder_tree_with_link_problems(root, outside)
    imported = {row["path"] for row in import_dataset("folder", root, default_split="train").rows}
    preprocessed = {
        Path(s.display).relative_to(root).as_posix()
        for s in sources_from_paths([root])
        if s.kind == "image" and not s.problem
    }
    predicted = {Path(p).relative_to(root).as_posix() for p in collect_inputs([root])}
    assert imported == preprocessed == {"fake/SDXL/b.png", "fake/linked/c.png", "real/a.png"}
    # predict also keeps the broken and looping links, so that each gets a row with its error
    assert predicted == imported | {"real/dangling.png", "real/self.png"}


def test_unreadable_folders_are_recorded_as_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    build_folder_tree(tmp_path)
    locked = str(tmp_path / "train" / "fake")
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = import_dataset("folder", tmp_path)
    assert skipped_reasons(result)["train/fake/"] == "cannot list folder (Permission denied)"
    assert not [p for p in by_path(result) if p.startswith("train/fake/")]

    build_diff_tree(tmp_path / "diff")
    locked = str(tmp_path / "diff" / "train")
    diff = import_dataset("diff", tmp_path / "diff")
    assert skipped_reasons(diff)["train/"] == "cannot list folder (Permission denied)"


def test_output_path_is_checked_before_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mfclip.data.importers import base

    def no_scan(*args, **kwargs):
        raise AssertionError("the dataset was scanned before the output path was checked")

    monkeypatch.setattr(base, "import_dataset", no_scan)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ManifestError, match=r"m\.txt: unknown manifest format; use one of \.csv"):
        run_import("folder", tmp_path, tmp_path / "m.txt")
    with pytest.raises(ManifestError, match=r"folder\.csv: output manifest path is a folder"):
        run_import("folder", tmp_path, tmp_path / "folder.csv")
    with pytest.raises(ManifestError, match=r"cannot create the output folder, .*file is a file"):
        run_import("folder", tmp_path, tmp_path / "file" / "sub" / "m.csv")
    (tmp_path / "m.csv.skipped.csv").mkdir()
    with pytest.raises(ManifestError, match=r"skipped-file log path is a folder"):
        run_import("folder", tmp_path, tmp_path / "m.csv")

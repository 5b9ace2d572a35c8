"""Miniature copies of dataset folder trees (real folder and file names, tiny files) and bad image files.

Used by the manifest, importer and dataset tests. Images are 8x8 PNG/JPEG; videos are small placeholder
files, since importers only read their names.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42 placeholder video"


def image_bytes(seed: int = 0, size: int = 8, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` 8-bit RGB pixels (its data is not that big)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(100))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def write_image(path: Path, seed: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    path.write_bytes(image_bytes(seed, size, fmt))
    return path


def write_video(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(VIDEO_BYTES)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# Bad and unusual image files


def write_bad_images(directory: Path, full_size: int = 16) -> dict[str, Path]:
    """One file per awkward case; returns name → path."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    good = directory / "good.png"
    Image.fromarray(np.full((full_size, full_size, 3), 120, np.uint8)).save(good)
    files["good"] = good
    data = good.read_bytes()
    files["truncated"] = directory / "truncated.png"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["zero_byte"] = directory / "zero.png"
    files["zero_byte"].write_bytes(b"")
    files["not_image"] = directory / "notes.png"
    files["not_image"].write_text("this is not an image\n")
    files["huge"] = directory / "huge.png"
    Image.new("RGB", (400, 300), (10, 20, 30)).save(files["huge"])
    files["cmyk"] = directory / "cmyk.jpg"
    Image.new("CMYK", (full_size, full_size), (0, 255, 255, 0)).save(files["cmyk"])  # red
    files["sixteen_bit"] = directory / "sixteen.png"
    Image.fromarray(np.full((full_size, full_size), 65535 // 2, np.uint16)).save(files["sixteen_bit"])
    files["palette"] = directory / "palette.png"
    palette = Image.new("P", (full_size, full_size), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))  # index 1 = green
    palette.save(files["palette"])
    files["rgba"] = directory / "rgba.png"
    Image.new("RGBA", (full_size, full_size), (255, 255, 255, 0)).save(files["rgba"])  # transparent white
    files["grey"] = directory / "grey.png"
    Image.new("L", (full_size, full_size), 77).save(files["grey"])
    files["rotated"] = directory / "rotated.jpg"
    write_rotated_jpeg(files["rotated"], width=full_size, height=full_size // 2)
    return files


#: EXIF orientation 6: the stored pixels are shown rotated 90 degrees clockwise.
EXIF_ROTATE_90_CW = 6


def write_rotated_jpeg(path: Path, width: int, height: int) -> Path:
    """A ``width`` x ``height`` JPEG (left half black, right half white) tagged with EXIF orientation 6.

    A viewer that honours the tag shows it ``height`` wide and ``width`` tall, black on top.
    """
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, width // 2 :] = 255
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_90_CW  # the Orientation tag
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


# --------------------------------------------------------------------------------------------------
# Awkward file names and links

#: A file name whose bytes are not valid UTF-8, and how it prints.
NON_UTF8_NAME = b"bad\xffname.png"
NON_UTF8_DISPLAY = "bad\\xffname.png"


def write_non_utf8_image(directory: Path, seed: int = 0) -> Path:
    """An image under ``directory`` named :data:`NON_UTF8_NAME`; returns its path (with surrogate escapes)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(directory), NON_UTF8_NAME)
    with open(path, "wb") as handle:
        handle.write(image_bytes(seed))
    return Path(os.fsdecode(path))


def build_folder_tree_with_odd_names(root: Path, outside: Path) -> dict[str, int]:
    """A folder tree with a non-UTF-8 file name and symbolic links (to a folder and to a file under
    ``outside``, and one within ``root``) besides ordinary images; returns the expected counts."""
    write_image(root / "real/a.png", 1)
    write_image(root / "fake/SDXL/b.png", 2)
    write_non_utf8_image(root / "real", 3)
    write_image(outside / "elsewhere/c.png", 4)
    write_image(outside / "d.png", 5)
    (root / "fake/linked").symlink_to(outside / "elsewhere", target_is_directory=True)
    (root / "real/linked.png").symlink_to(outside / "d.png")
    (root / "real/alias.png").symlink_to(root / "real/a.png")
    return {"rows": 5, "skipped": 1}


# --------------------------------------------------------------------------------------------------
# Dataset trees


def build_diff_tree(root: Path) -> dict[str, int]:
    """DiFF: split folders, real/ and the four subsets with their generators' real nesting."""
    fakes = [
        "train/t2i/Midjourney/id_0974/016.png",
        "train/t2i/HPS/id_0418/image_4/1.jpg/align_sd_gene_000_000.png",
        "train/i2i/LoRA/LoRA/id_0278/lora_020_000.png",
        "train/fs/DiffFace/id_1804/4.jpg/id_1185/img_id_006_003.png",
        "train/fe/cycle_diff/id_2780/seed_6/0.jpg_3/gene.png",
        "val/fs/DCFace/id_0509/002.jpg",
        "test/t2i/SDXL/id_2575/images_4/M1_002/sd2_gene_1.png",
        "test/fe/CoDiff/id_1909/6.jpg/id_2731_9.png/0C_interText_optDM_1_alpha=-0.5.png",
        "test/i2i/FreeDoM_I/id_0160/arcface_face_2/1.jpg/FreeDom_Gene.png",
    ]
    reals = ["train/real/00001.png", "train/real/00002.png", "val/real/00003.png", "test/real/00004.png"]
    for i, rel in enumerate(fakes + reals):
        write_image(root / rel, seed=i)
    write_text(root / "train/real/notes.txt", "not an image")
    (root / "train/real/00005.png").write_bytes(b"")
    write_image(root / "train/extra/x.png")
    return {"fake": len(fakes), "real": len(reals), "skipped": 3}


def build_folder_tree(root: Path) -> dict[str, int]:
    write_image(root / "train/real/a.png", 1)
    write_image(root / "train/real/b.png", 2)
    write_image(root / "train/fake/SDXL/c.png", 3)
    write_image(root / "train/fake/stylegan3/d.png", 4)
    write_image(root / "val/0_real/e.png", 5)
    write_image(root / "val/1_fake/MyGen/sub/f.png", 6)
    write_image(root / "test/fake/g.png", 7)
    write_text(root / "README.txt", "about this dataset")
    return {"real": 3, "fake": 4, "skipped": 1}


def build_genface_tree(root: Path) -> Path:
    """Images plus the user's CSV; returns the CSV path."""
    write_image(root / "images/real/001.png", 1)
    write_image(root / "images/DDPM/002.png", 2)
    write_image(root / "images/IAFaces/003.png", 3)
    write_image(root / "images/Mystery/004.png", 4)
    csv = root / "genface.csv"
    csv.write_text(
        "path,generator,split\n"
        "images/real/001.png,real,train\n"
        "images/DDPM/002.png,DDPM,train\n"
        "images/IAFaces/003.png,iafaces,test\n"
        "images/Mystery/004.png,Mystery,val\n"
        "images/missing.png,DDPM,test\n"
        ",DDPM,test\n"
        "images/DDPM/002.png,DDPM,sometimes\n"
        "../outside.png,DDPM,train\n",
        encoding="utf-8",
    )
    return csv


def build_ffpp_tree(root: Path, frames: bool = False) -> None:
    """FaceForensics++ with c23 videos (or frames), a c40 copy, a masks folder and official splits."""
    kind_videos = [
        ("original_sequences/youtube/c23", ["000", "001", "002", "003", "004"]),
        ("manipulated_sequences/Deepfakes/c23", ["000_001", "001_000", "002_003", "003_002"]),
        ("manipulated_sequences/Face2Face/c23", ["000_001", "002_003"]),
    ]
    for folder, ids in kind_videos:
        for vid in ids:
            if frames:
                for f in range(2):
                    write_image(root / folder / "frames" / vid / f"{f:04d}.png", f)
            else:
                write_video(root / folder / "videos" / f"{vid}.mp4")
    write_video(root / "original_sequences/youtube/c40/videos/000.mp4")
    write_video(root / "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4")
    write_video(root / "original_sequences/actors/c23/videos/01__exit_phone_room.mp4")
    write_video(
        root / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4"
    )
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "train.json").write_text(json.dumps([["000", "001"]]))
    (splits / "val.json").write_text(json.dumps([["004", "999"]]))
    (splits / "test.json").write_text(json.dumps([["002", "003"]]))


def build_celebdf_tree(root: Path, frames: bool = False) -> None:
    videos = {
        "Celeb-real": ["id0_0000", "id0_0001"],
        "YouTube-real": ["00170", "00171"],
        "Celeb-synthesis": ["id0_id16_0004", "id0_id1_0000"],
    }
    for folder, names in videos.items():
        for name in names:
            if frames:
                write_image(root / folder / "frames" / name / "000.png")
                write_image(root / folder / "frames" / name / "001.png")
            else:
                write_video(root / folder / f"{name}.mp4")
    write_text(
        root / "List_of_testing_videos.txt",
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id16_0004.mp4\n1 Celeb-real/id9_9999.mp4\n",
    )


def build_dfdc_tree(root: Path) -> None:
    part = root / "dfdc_train_part_0"
    metadata = {
        "aaqaifqrwn.mp4": {"label": "FAKE", "split": "train", "original": "bbbbbbbbbb.mp4"},
        "bbbbbbbbbb.mp4": {"label": "REAL", "split": "train", "original": None},
        "missingvid.mp4": {"label": "FAKE", "split": "train", "original": "bbbbbbbbbb.mp4"},
        "weirdlabel.mp4": {"label": "MAYBE", "split": "train"},
    }
    write_text(part / "metadata.json", json.dumps(metadata))
    for name in ("aaqaifqrwn.mp4", "bbbbbbbbbb.mp4", "unlisted00.mp4", "weirdlabel.mp4"):
        write_video(part / name)
    write_text(root / "test/labels.csv", "filename,label\ncccccccccc.mp4,1\ndddddddddd.mp4,0\n")
    write_video(root / "test/videos/cccccccccc.mp4")
    write_video(root / "test/videos/dddddddddd.mp4")


def build_deepfakebench_tree(root: Path) -> Path:
    """Frames under root plus a DeepfakeBench JSON whose paths carry a foreign absolute prefix."""
    prefix = "/mnt/lab/DeepfakeBench/datasets/rgb"
    frames = {
        ("FF-real", "train", "000"): ["FaceForensics++/original_sequences/youtube/c23/frames/000/000.png"],
        ("FF-real", "test", "002"): [
            "FaceForensics++/original_sequences/youtube/c23/frames/002/000.png",
            "FaceForensics++/original_sequences/youtube/c23/frames/002/001.png",
        ],
        ("FF-DF", "train", "000_003"): [
            "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_003/000.png"
        ],
        ("FF-DF", "test", "002_006"): [
            "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/002_006/000.png"
        ],
    }
    for paths in frames.values():
        for rel in paths:
            write_image(root / rel)
    data: dict = {"FF-DF": {"FF-real": {}, "FF-DF": {}}}
    for (label, split, video), paths in frames.items():
        listed = [f"{prefix}/{p}" for p in paths]
        if video == "002_006":  # Windows separators, as in some published files
            listed = ["D:\\data\\rgb\\" + p.replace("/", "\\") for p in paths]
        entry = {"label": label, "frames": listed}
        data["FF-DF"][label].setdefault(split, {}).setdefault("c23", {})[video] = entry
        if split == "test":  # DeepfakeBench copies test videos into val
            data["FF-DF"][label].setdefault("val", {}).setdefault("c23", {})[video] = dict(entry)
    data["FF-DF"]["FF-DF"]["train"]["c23"]["000_009"] = {
        "label": "FF-DF",
        "frames": [f"{prefix}/FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_009/000.png"],
    }
    json_path = root / "dataset_json" / "FF-DF.json"
    write_text(json_path, json.dumps(data))
    return json_path


def build_diffusionface_tree(root: Path) -> None:
    write_image(root / "MM-CelebA-HQ/0.jpg", 0)
    write_image(root / "MM-CelebA-HQ/1.jpg", 1)
    write_image(root / "Text2Img/SDXL/2.png", 2)
    write_image(root / "Inpaint/SD_inpaint/3.png", 3)
    write_image(root / "DiffSwap/DiffSwap/4.png", 4)
    write_image(root / "Unconditional/DDPM/test/5.png", 5)
    write_image(root / "DiffAE/6.png", 6)
    write_image(root / "Other_Model/7.png", 7)
    write_text(root / "Text2Img/SDXL/prompts.txt", "a face")


def build_folder_tree_with_link_problems(root: Path, outside: Path) -> dict[str, str]:
    """A real/ and fake/ tree holding every kind of link and hidden entry the folder-walking rules name.

    Returns the expected skipped entries (path relative to ``root`` → reason); the usable images are
    ``real/a.png``, ``fake/SDXL/b.png`` and ``fake/linked/c.png`` (a link to a folder outside the root).
    """
    from mfclip.data import paths

    write_image(root / "real/a.png", 1)
    write_image(root / "fake/SDXL/b.png", 2)
    write_image(outside / "c.png", 3)
    (root / "fake/linked").symlink_to(outside, target_is_directory=True)
    (root / "real/loop").symlink_to(root / "real", target_is_directory=True)  # a folder inside itself
    (root / "fake/SDXL/up").symlink_to(root, target_is_directory=True)  # the root, from below
    (root / "fake/SDXL_again").symlink_to(root / "fake/SDXL", target_is_directory=True)  # a second path
    (root / "real/dangling.png").symlink_to(root / "nowhere.png")
    (root / "real/self.png").symlink_to(root / "real/self.png")
    write_image(root / "real/.hidden.png", 4)
    write_text(root / "real/._a.png", "macOS resource fork, not an image")
    write_image(root / ".cache/x.png", 5)
    return {
        ".cache/": paths.HIDDEN,
        "fake/SDXL/up": paths.DIRECTORY_CYCLE,
        "fake/SDXL_again": paths.already_scanned("fake/SDXL/"),
        "real/._a.png": paths.HIDDEN,
        "real/.hidden.png": paths.HIDDEN,
        "real/dangling.png": paths.BROKEN_LINK,
        "real/loop": paths.DIRECTORY_CYCLE,
        "real/self.png": paths.LINK_LOOP,
    }


def _write_landmarks(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros((81, 2), np.int64))
    return path


def _ffpp_split_files(directory: Path) -> None:
    """Official-format split files (lists of [target, source] pairs as strings) for the trees below."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.json").write_text(json.dumps([["000", "001"]]))
    (directory / "val.json").write_text(json.dumps([["004", "999"]]))
    (directory / "test.json").write_text(json.dumps([["002", "003"]]))


def build_ffpp_deepfakebench_tree(root: Path) -> None:
    """FaceForensics++ after DeepfakeBench's preprocessing: ``<comp>/frames/<video>/NNN.png`` (written
    only for videos where a face was found), ``landmarks/`` and ``masks/`` beside ``videos/``, the mask
    videos of the official download (``<Method>/masks/videos/``), split files at the root.

    Real videos 000-002 have frames, 003 and 004 only their video; of the Deepfakes videos 000_001 and
    003_002 have frames, 002_003 only its video, and 001_000 neither (its video was deleted after
    preprocessing). Ids 999, 004_999 and 999_004 are in the split files but not on disk.
    """
    real = root / "original_sequences/youtube/c23"
    fake = root / "manipulated_sequences/Deepfakes/c23"
    for video in ("000", "001", "002", "003", "004"):
        write_video(real / "videos" / f"{video}.mp4")
    for video in ("000", "001", "002"):
        for frame in ("000", "015"):
            write_image(real / "frames" / video / f"{frame}.png", int(frame))
            _write_landmarks(real / "landmarks" / video / f"{frame}.npy")
    for video in ("000_001", "002_003", "003_002"):
        write_video(fake / "videos" / f"{video}.mp4")
        write_video(root / "manipulated_sequences/Deepfakes/masks/videos" / f"{video}.mp4")
    for video in ("000_001", "003_002"):
        for frame in ("000", "015"):
            write_image(fake / "frames" / video / f"{frame}.png", int(frame))
            write_image(fake / "masks" / video / f"{frame}.png", 0)
            _write_landmarks(fake / "landmarks" / video / f"{frame}.npy")
    _ffpp_split_files(root)


def build_ffpp_c0_tree(root: Path) -> None:
    """FaceForensics++ images downloaded with ``-c c0 -t images`` (the name the official instructions use
    for the lossless compression), the source YouTube videos and a mirror's archive beside them."""
    for folder, video in (
        ("original_sequences/youtube", "000"),
        ("manipulated_sequences/Face2Face", "000_001"),
    ):
        for frame in ("0000", "0001"):
            write_image(root / folder / "c0/images" / video / f"{frame}.png", int(frame))
    write_video(root / "downloaded_videos/-2uK0rVMIQk/-2uK0rVMIQk.mp4")
    write_text(root / "downloaded_videos/-2uK0rVMIQk/-2uK0rVMIQk.json", "{}")
    (root / "FaceForensics++_c23.zip").write_bytes(b"PK\x03\x04 placeholder archive")
    _ffpp_split_files(root / "splits")


CELEBDF_VIDEOS = {
    "Celeb-real": ["id0_0000", "id0_0001"],
    "YouTube-real": ["00170", "00171"],
    "Celeb-synthesis": ["id0_id16_0004", "id0_id1_0000"],
}
#: The test list of the trees below: Celeb-DF marks real videos 1 and fakes 0.
CELEBDF_TEST_LIST = (
    "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id16_0004.mp4\n1 Celeb-real/id9_9999.mp4\n"
)


def build_celebdf_deepfakebench_tree(root: Path) -> None:
    """Celeb-DF v2 in DeepfakeBench's input layout (``<class>/videos/*.mp4``) after its preprocessing:
    ``frames/<video>/`` and ``landmarks/<video>/`` only for the videos where a face was found
    (``id0_0000``, ``00171``, ``id0_id1_0000``), plus a ``masks/`` folder."""
    with_frames = {"id0_0000", "00171", "id0_id1_0000"}
    for folder, names in CELEBDF_VIDEOS.items():
        for name in names:
            write_video(root / folder / "videos" / f"{name}.mp4")
            if name in with_frames:
                for frame in ("000", "031"):
                    write_image(root / folder / "frames" / name / f"{frame}.png", int(frame))
                    _write_landmarks(root / folder / "landmarks" / name / f"{frame}.npy")
    write_image(root / "Celeb-synthesis/masks/id0_id1_0000/000.png")
    write_text(root / "List_of_testing_videos.txt", CELEBDF_TEST_LIST)


def deepfakebench_json_for_celebdf(root: Path, prefix: str = "/data/DeepfakeBench/datasets/rgb") -> Path:
    """The ``Celeb-DF-v2.json`` DeepfakeBench's ``rearrange.py`` writes for a Celeb-DF tree with frames
    (``<root>`` is its ``Celeb-DF-v2`` folder, listed under ``prefix`` on the machine that made it):
    every video with frames under ``train``, the test list's videos under ``test`` and ``val`` as well."""
    data: dict = {"Celeb-DF-v2": {"CelebDFv2_real": {}, "CelebDFv2_fake": {}}}
    for label in data["Celeb-DF-v2"].values():
        label.update({"train": {}, "val": {}, "test": {}})
    test = {
        line.split()[1].split("/")[-1][:-4]
        for line in (root / "List_of_testing_videos.txt").read_text().splitlines()
    }
    for folder in CELEBDF_VIDEOS:
        label = "CelebDFv2_real" if folder.endswith("real") else "CelebDFv2_fake"
        for video_dir in sorted((root / folder / "frames").iterdir()):
            frames = [
                f"{prefix}/Celeb-DF-v2/{folder}/frames/{video_dir.name}/{p.name}"
                for p in sorted(video_dir.iterdir())
            ]
            entry = {"label": label, "frames": frames}
            data["Celeb-DF-v2"][label]["train"][video_dir.name] = entry
            if video_dir.name in test:
                data["Celeb-DF-v2"][label]["test"][video_dir.name] = entry
                data["Celeb-DF-v2"][label]["val"][video_dir.name] = entry
    path = root / "dataset_json" / "Celeb-DF-v2.json"
    write_text(path, json.dumps(data))
    return path


def build_dfd_deepfakebench_json(root: Path, prefix: str = "/data/DeepfakeBench/datasets/rgb") -> Path:
    """DFD frames and the ``DeepFakeDetection.json`` DeepfakeBench's ``rearrange.py`` writes for them
    (``DFD_real`` / ``DFD_fake``, every video under all three splits)."""
    videos = {
        "DFD_real": ("original_sequences/actors", "01__exit_phone_room"),
        "DFD_fake": ("manipulated_sequences/DeepFakeDetection", "01_02__exit_phone_room__YVGY8LOK"),
    }
    data: dict = {"DeepFakeDetection": {}}
    for label, (folder, video) in videos.items():
        rel = f"FaceForensics++/{folder}/c23/frames/{video}/000.png"
        write_image(root / rel)
        entry = {"label": label, "frames": [f"{prefix}/{rel}"]}
        data["DeepFakeDetection"][label] = {s: {"c23": {video: entry}} for s in ("train", "val", "test")}
    path = root / "dataset_json" / "DeepFakeDetection.json"
    write_text(path, json.dumps(data))
    return path

"""Manifests: reading/writing, validation of every fault, loading, selection, splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_trees import write_image
from mfclip.data.manifest import (
    ManifestError,
    assign_splits,
    load_manifest,
    parse_label,
    read_manifest,
    select_rows,
    summarize_manifest,
    validate_manifest,
    write_manifest,
)
from mfclip.schema import MANIFEST_COLUMNS


def make_rows() -> list[dict]:
    return [
        {"path": "real/a.png", "label": 0, "split": "train", "dataset": "toy"},
        {"path": "real/b.png", "label": 0, "split": "test", "dataset": "toy"},
        {"path": "fake/SDXL/c.png", "label": 1, "split": "train", "dataset": "toy", "generator": "SDXL"},
        {
            "path": "fake/DiffFace/d.png",
            "label": 1,
            "split": "train",
            "dataset": "toy",
            "forgery_type": "face_swap",
            "family": "diffusion",
            "generator": "DiffFace",
        },
        {
            "path": "fake/StyleGAN3/e.png",
            "label": 1,
            "split": "val",
            "dataset": "other",
            "generator": "StyleGAN3",
        },
        {"path": "fake/x/f.png", "label": 1, "split": "test", "dataset": "toy"},
    ]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    root = tmp_path / "data"
    df = pd.DataFrame(make_rows()).fillna("")
    for i, rel in enumerate(df["path"]):
        write_image(root / rel, seed=i)
    return root, df


# --------------------------------------------------------------------------------------------------
# read / write


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".csv.gz"])
def test_write_read_roundtrip(tmp_path: Path, tree, suffix: str) -> None:
    _, df = tree
    df = df.assign(subset=["", "", "t2i", "fs", "", ""])
    path = write_manifest(df, tmp_path / f"m{suffix}")
    back = read_manifest(path)
    assert list(back.columns) == [*MANIFEST_COLUMNS, "subset"]
    assert back["label"].dtype == np.int64
    assert back["path"].tolist() == df["path"].tolist()
    assert back["generator"].tolist() == df["generator"].tolist()
    assert back["video_id"].tolist() == [""] * len(df)
    assert back["subset"].tolist() == ["", "", "t2i", "fs", "", ""]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", f"m{suffix}"])  # no temp files left


def test_read_fills_optional_columns(tmp_path: Path) -> None:
    path = tmp_path / "minimal.csv"
    path.write_text("path,label,split\na.png,1,train\n")
    df = read_manifest(path)
    assert df.loc[0, "dataset"] == "" and df.loc[0, "video_id"] == ""
    assert df["label"].tolist() == [1]


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing\.csv: manifest not found"):
        read_manifest(tmp_path / "missing.csv")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.txt")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match=r"empty\.csv: manifest file is empty"):
        read_manifest(empty)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match=r"broken\.parquet: not a readable Parquet manifest"):
        read_manifest(broken)
    with pytest.raises(ManifestError, match="without column"):
        write_manifest(pd.DataFrame({"path": ["a.png"]}), tmp_path / "x.csv")


# --------------------------------------------------------------------------------------------------
# validation


def test_valid_manifest_has_no_errors(tree) -> None:
    root, df = tree
    report = validate_manifest(df, root=root)
    assert report.ok, report.format()
    # "fake/x/f.png" has no forgery labels: fine. Warnings only for vocabulary problems.
    assert report.errors == []


def test_validation_lists_each_fault_with_row_and_column(tree, tmp_path: Path) -> None:
    root, df = tree
    bad = df.astype({"label": object})
    bad.loc[0, "label"] = "fake"
    bad.loc[1, "split"] = "training"
    bad.loc[2, "path"] = "../outside.png"
    bad.loc[3, "path"] = "/abs/d.png"
    bad.loc[4, "path"] = "real/a.png"  # duplicate of row 0
    bad.loc[5, "path"] = "fake/x/missing.png"
    report = validate_manifest(bad, root=root)
    assert not report.ok
    found = {(p.row, p.column): p.message for p in report.errors}
    assert "label must be 0 (real) or 1 (fake), got 'fake'" in found[(0, "label")]
    assert "did you mean 'train'" in found[(1, "split")]
    assert "escapes the dataset root" in found[(2, "path")]
    assert "absolute path" in found[(3, "path")]
    assert "duplicate path 'real/a.png' (first at row 2)" in found[(4, "path")]  # as a spreadsheet shows it
    assert "fake/x/missing.png: file not found" in found[(5, "path")]
    assert report.bad_rows == [0, 1, 2, 3, 4, 5]
    text = report.format(limit=2)
    assert "6 error(s) in 6 row(s)" in text and "... and 4 more" in text


def test_validation_windows_paths_and_empty(tree) -> None:
    root, df = tree
    bad = df.copy()
    bad.loc[0, "path"] = "C:\\data\\a.png"
    bad.loc[1, "path"] = "..\\b.png"
    bad.loc[2, "path"] = ""
    found = {p.row: p.message for p in validate_manifest(bad, root=root).errors}
    assert "absolute path" in found[0]
    assert "escapes" in found[1]
    assert "empty path" in found[2]


def test_validation_missing_column_and_empty_table() -> None:
    report = validate_manifest(pd.DataFrame({"path": ["a.png"], "labels": [1], "split": ["train"]}))
    assert [(p.row, p.column) for p in report.table_errors] == [(None, "label")]
    assert "found 'labels'" in report.errors[0].message
    report = validate_manifest(pd.DataFrame(columns=["path", "label", "split"]))
    assert "no rows" in report.format()


def test_validation_warnings_do_not_invalidate(tree) -> None:
    root, df = tree
    odd = df.copy()
    odd.loc[2, "forgery_type"] = "entire_synthesized_face"
    odd.loc[0, "generator"] = "SDXL"  # a real image with a generator
    report = validate_manifest(odd, root=root)
    assert report.ok
    messages = {(p.row, p.column): p.message for p in report.warnings}
    assert "unknown forgery_type 'entire_synthesized_face'" in messages[(2, "forgery_type")]
    assert "did you mean 'entire_synthesis'" in messages[(2, "forgery_type")]
    assert "real image" in messages[(0, None)]


def test_validation_root_missing(tree, tmp_path: Path) -> None:
    _, df = tree
    report = validate_manifest(df, root=tmp_path / "nowhere")
    assert "is not a directory" in report.format()
    assert validate_manifest(df, root=tmp_path / "nowhere", check_files=False).ok


# --------------------------------------------------------------------------------------------------
# load_manifest


def test_load_manifest_refuses_invalid_with_first_problems(tree, tmp_path: Path) -> None:
    root, df = tree
    bad = df.copy()
    bad["label"] = bad["label"].astype(object)
    for row in range(6):
        bad.loc[row, "label"] = 7
    path = write_manifest(bad, tmp_path / "bad.csv")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, root, max_listed=3)
    message = str(info.value)
    # Rows as a spreadsheet numbers them: the header is row 1, the first data row row 2.
    assert "row 2, column 'label'" in message and "row 4" in message and "row 5" not in message
    assert "... and 3 more" in message and "mfclip manifest validate" in message
    assert "drop_invalid=True (Python)" in message and "data.drop_invalid=true (mfclip train)" in message


def test_load_manifest_drop_invalid_logs_count(tree, tmp_path: Path, caplog) -> None:
    root, df = tree
    bad = df.copy()
    bad.loc[1, "split"] = "nope"
    bad.loc[5, "path"] = "fake/x/missing.png"
    path = write_manifest(bad, tmp_path / "m.parquet")
    with caplog.at_level(logging.WARNING, logger="mfclip.data.manifest"):
        loaded = load_manifest(path, root, drop_invalid=True)
    assert loaded.index.tolist() == [0, 2, 3, 4]  # row numbers of the file are kept
    assert loaded.attrs["dropped_rows"] == 2
    assert "dropped 2 of 6 rows" in caplog.text
    assert loaded["label"].dtype == np.int64
    # A missing column cannot be fixed by dropping rows.
    path = write_manifest(df, tmp_path / "ok.csv")
    pd.read_csv(path).drop(columns=["split"]).to_csv(path, index=False)
    with pytest.raises(ManifestError, match="'split': required column is missing"):
        load_manifest(path, root, drop_invalid=True)


def test_load_manifest_root_defaults_to_manifest_folder(tree) -> None:
    root, df = tree
    path = write_manifest(df, root / "manifest.csv")
    loaded = load_manifest(path, None)
    assert len(loaded) == len(df) and loaded.attrs["root"] == str(root)


# --------------------------------------------------------------------------------------------------
# labels, select_rows, assign_splits, summary


def test_select_rows_protocol_examples(tree) -> None:
    _, df = tree
    train = select_rows(df, split="train", forgery_type=["face_swap"])
    assert train.index.tolist() == [0, 3]  # the train real + the face-swap fake, row numbers kept
    only_fakes = select_rows(df, split=["train", "val"], generator="SDXL", include_real=False)
    assert only_fakes.index.tolist() == [2]
    held_out = select_rows(df, dataset="toy", exclude_generator=["SDXL"])
    assert held_out.index.tolist() == [0, 1, 3, 5]
    by_subset = select_rows(df.assign(subset=["", "", "t2i", "fs", "", ""]), fake_where={"subset": "t2i"})
    assert by_subset.index.tolist() == [0, 1, 2]
    assert select_rows(df, where={"dataset": "other"}).index.tolist() == [4]
    only_reals = select_rows(df, split="train", include_fake=False)
    assert only_reals.index.tolist() == [0]
    other_reals = select_rows(df, generator="StyleGAN3", dataset="other", real_dataset="toy")
    assert other_reals.index.tolist() == [0, 1, 4]


def test_select_rows_is_strict_about_every_name(tree) -> None:
    _, df = tree
    with pytest.raises(ManifestError, match=r"^generator: 'SDXL2' does not occur .*; did you mean 'SDXL'\?$"):
        select_rows(df, generator=["SDXL2"])
    # StyleGAN3 exists, but not among the train split's fakes: that selection would silently lack it.
    with pytest.raises(
        ManifestError, match=r"generator: 'StyleGAN3' does not occur among the fake rows of split train"
    ):
        select_rows(df, split="train", generator=["SDXL", "StyleGAN3"])
    with pytest.raises(ManifestError, match=r"^subset: the manifest has no column 'subset'$"):
        select_rows(df, fake_where={"subset": "t2i"})
    with pytest.raises(
        ManifestError,
        match=r"^split: 'tset' does not occur among the rows of the manifest \(present: test, train, val\)",
    ):
        select_rows(df, split="tset")
    with pytest.raises(
        ManifestError, match=r"^the selection \(split=\['val'\], include_fake=False\) selects no rows"
    ):
        select_rows(df, split="val", include_fake=False)  # val holds no real


def test_select_rows_explains_case_other_splits_empty_and_nan_filled_manifests(tree) -> None:
    import numpy as np

    _, df = tree
    with pytest.raises(
        ManifestError,
        match=r"^generator: 'sdxl', 'StyleGAN3' do not occur among the fake rows of split train of the "
        r"manifest \(present: DiffFace, SDXL\); did you mean 'SDXL' for 'sdxl'\?; "
        r"'StyleGAN3' occurs in split val$",
    ):
        select_rows(df, split="train", generator=["sdxl", "StyleGAN3"])
    with pytest.raises(ManifestError, match=r"'other' occurs in split val$"):
        select_rows(df, split=["train", "test"], dataset="other")
    with pytest.raises(ManifestError, match=r"^test\.unseen: the manifest has no rows$"):
        select_rows(df.iloc[:0], split="test", generator="SDXL", key="test.unseen")
    with pytest.raises(ManifestError, match=r"^the selection: the manifest has no column 'label'$"):
        select_rows(df.drop(columns="label"), split="test")
    # Columns of NaN (a Parquet manifest without those labels) read as empty text: unknown, not "nan".
    blank = df.assign(generator=np.nan, family=np.nan)
    assert select_rows(blank, split="test").index.tolist() == select_rows(df, split="test").index.tolist()
    with pytest.raises(ManifestError, match=r"'SDXL' does not occur .* \(present: none\)"):
        select_rows(blank, generator="SDXL")


def test_one_label_parser_for_manifests_importers_and_preprocess() -> None:
    import numpy as np

    for value in (1, np.int64(1), 1.0, "1", " 1 ", "1.0"):
        assert parse_label(value) == 1, value
    for value in (True, 2, 0.5, "", "yes", "fake", None):
        assert parse_label(value) is None, value
    assert [parse_label(v, names=True) for v in ("real", "FAKE", " Fake ", "0", "true")] == [0, 1, 1, 0, None]


def test_assign_splits_keeps_groups_together_and_is_stable() -> None:
    n = 400
    df = pd.DataFrame(
        {
            "path": [f"v{i // 4}/{i % 4}.png" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "split": ["test" if i < 8 else "" for i in range(n)],
            "video_id": [f"v{i // 4}" for i in range(n)],
        }
    )
    out = assign_splits(df, (0.6, 0.2, 0.2), seed=3)
    assert (out["split"].iloc[:8] == "test").all()  # existing splits kept
    assert out.groupby("video_id")["split"].nunique().max() == 1
    shares = out["split"].value_counts(normalize=True)
    assert 0.45 < shares["train"] < 0.75 and shares["val"] > 0.08 and shares["test"] > 0.08
    again = assign_splits(
        pd.concat([df, df.assign(path="x" + df["path"], video_id="x" + df["video_id"])]),
        (0.6, 0.2, 0.2),
        seed=3,
    )
    assert again["split"].iloc[:n].tolist() == out["split"].tolist()  # adding rows moves nothing
    with pytest.raises(ManifestError, match="summing to 1"):
        assign_splits(df, (0.5, 0.2, 0.2))


def test_summarize_manifest(tree) -> None:
    _, df = tree
    summary = summarize_manifest(df)
    assert (summary["rows"], summary["real"], summary["fake"]) == (6, 2, 4)
    assert summary["split"]["train"] == {"real": 1, "fake": 2}
    assert summary["generator"]["SDXL"] == {"fake": 1}
    assert summary["generator"]["(empty)"] == {"fake": 1}


def test_rows_with_a_wrong_field_count_are_problems(tree, tmp_path: Path, caplog) -> None:
    root, _ = tree
    path = tmp_path / "ragged.csv"
    path.write_text(
        "path,label,split\n"
        "real/a.png,0,train\n"
        "extra,real/b.png,0,test,x\n"  # 5 fields: pandas would make the first two the index
        "\n"
        "fake/SDXL/c.png,1\n"
        "fake/DiffFace/d.png,1,train\n"
    )
    df = read_manifest(path)
    assert df["path"].tolist()[0] == "real/a.png" and list(df.index) == [0, 1, 2, 3]
    report = validate_manifest(df, root=root)
    assert [str(p) for p in report.errors if p.column is None] == [
        "row 3: 5 fields, but the header has 3",
        "row 4: 2 fields, but the header has 3",  # the blank line is not counted
    ]
    with pytest.raises(ManifestError, match=r"row 3: 5 fields, but the header has 3"):
        load_manifest(path, root)
    with caplog.at_level(logging.WARNING):
        kept = load_manifest(path, root, drop_invalid=True)
    assert kept["path"].tolist() == ["real/a.png", "fake/DiffFace/d.png"]
    assert kept.attrs["dropped_rows"] == 2


def test_the_shared_schema_imports_nothing() -> None:
    """mfclip.schema is what data, metrics, inference and serve share: it must not tie them together."""
    import ast

    import mfclip.schema as schema

    tree = ast.parse(Path(schema.__file__).read_text(encoding="utf-8"))
    imported = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [getattr(node, "module", None) for node in imported] == ["__future__"]
    assert [schema.class_name(p, 0.5) for p in (0.49, 0.5)] == ["real", "fake"]

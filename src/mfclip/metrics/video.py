"""Video-level scores: aggregate the frame scores of each video into one score per video."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mfclip.metrics._ranking import MetricsError, as_labels, as_scores

VIDEO_AGGREGATES = ("mean", "max")


def missing_values(series: pd.Series) -> np.ndarray:
    """Boolean mask of unknown values: NaN / None, or the empty string (the manifest's "unknown")."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        empty = np.flatnonzero(series.cat.categories.astype(str) == "")
        return (codes < 0) | np.isin(codes, empty)
    missing = series.isna().to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        missing = missing | (series == "").to_numpy(dtype=bool, na_value=True)
    return missing


def video_key(predictions: pd.DataFrame) -> list[str]:
    """Columns that identify a video: ``dataset`` and ``video_id`` (ids repeat across datasets), or
    ``video_id`` alone."""
    return ["dataset", "video_id"] if "dataset" in predictions.columns else ["video_id"]


def aggregate_by_video(
    predictions: pd.DataFrame,
    how: str = "mean",
    keep: Sequence[str] = (),
    label_column: str = "label",
    score_column: str = "p_fake",
) -> pd.DataFrame:
    """One row per video: its key columns, ``label``, the ``how`` ("mean" or "max") of its frame scores
    as ``p_fake``, ``n_frames``, and the first value of each ``keep`` column.

    Rows without a ``video_id`` are left out. A video whose frames carry both labels is an error that
    names it, since its video-level label would be ambiguous.
    """
    if how not in VIDEO_AGGREGATES:
        raise MetricsError(f"video aggregate must be one of {list(VIDEO_AGGREGATES)}, got {how!r}")
    if "video_id" not in predictions.columns:
        raise MetricsError("predictions have no 'video_id' column; video-level metrics need one")
    key = video_key(predictions)
    keep = [column for column in keep if column in predictions.columns and column not in key]
    rows = np.flatnonzero(~missing_values(predictions["video_id"]))

    def take(column: str) -> pd.Series:
        return predictions[column].iloc[rows].reset_index(drop=True)

    frame = pd.DataFrame(
        {
            **{column: take(column) for column in key},
            "label": as_labels(predictions[label_column].to_numpy(), label_column)[rows],
            "p_fake": as_scores(predictions[score_column].to_numpy(), score_column)[rows],
            **{column: take(column) for column in keep},
        }
    )
    if frame.empty:
        return pd.DataFrame(columns=[*key, "label", "p_fake", "n_frames", *keep])
    grouped = frame.groupby(key, sort=True, observed=True, dropna=False)
    videos = grouped.agg(
        label_min=("label", "min"),
        label_max=("label", "max"),
        p_fake=("p_fake", how),
        n_frames=("p_fake", "size"),
        **{column: (column, "first") for column in keep},
    ).reset_index()
    mixed = videos["label_min"] != videos["label_max"]
    if mixed.any():
        first = videos.loc[mixed].iloc[0]
        name = "/".join(str(first[column]) for column in key)
        raise MetricsError(
            f"video {name!r} has both real and fake frames ({int(mixed.sum())} such videos); "
            "video-level labels must be uniform"
        )
    videos = videos.rename(columns={"label_min": "label"}).drop(columns="label_max")
    videos["label"] = videos["label"].astype(np.int8)
    return videos[[*key, "label", "p_fake", "n_frames", *keep]]

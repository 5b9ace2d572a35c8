"""Inference: the Detector API, prediction over files and videos, explanations and export."""

from __future__ import annotations

from mfclip.inference.detector import Detector, Prediction, VideoPrediction

__all__ = ["Detector", "Prediction", "VideoPrediction"]

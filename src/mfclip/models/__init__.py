"""Detector models (MFCLIP and baselines), their registry and weight loading."""

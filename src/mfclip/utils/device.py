"""Device and dtype resolution: every device is passed through, never hard-coded."""

from __future__ import annotations

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


class DeviceError(ValueError):
    """A requested device is not a device, or is not available on this machine."""


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available, then MPS, else CPU.

    Any other value must name an available device (``cpu``, ``cuda``, ``cuda:N``, ``mps``); otherwise a
    :class:`DeviceError` says why, before any model is moved.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        resolved, label = device, str(device)
    else:
        label = str(device)
        try:
            resolved = torch.device(label.strip().lower())
        except (RuntimeError, ValueError, TypeError):
            raise DeviceError(f"--device {label}: not a device ({DEVICE_CHOICES})") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {label}: no CUDA device is available (use auto or cpu)")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(
                f"--device {label}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
        return resolved
    if resolved.type == "mps":
        if not _mps_available():
            raise DeviceError(f"--device {label}: MPS is not available on this machine (use auto or cpu)")
        return resolved
    raise DeviceError(f"--device {label}: not a supported device ({DEVICE_CHOICES})")


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(_DTYPES)}") from None

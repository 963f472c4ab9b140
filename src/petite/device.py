"""Which device a run uses: ``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda[:N]``."""

from __future__ import annotations

import torch

from petite.errors import UserError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU; otherwise the named device.

    Raises:
        UserError: a CUDA device is asked for on a machine without one, or the name is not a device.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} requested but no CUDA device is available")
    return resolved


__all__ = ["resolve_device"]

"""What this process runs on: the torch device to use, the hardware, and library versions (for
build manifests and MLflow tags); children that die with it. torch is imported inside the
functions."""

from __future__ import annotations

import os
import platform
import signal
from typing import Any, Sequence


def pick_device(requested: str = "auto") -> str:
    """``auto``: CUDA, else Moore Threads' MUSA (torch_musa), else the CPU; anything else as given."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    try:  # Moore Threads: importing torch_musa is what registers torch.musa
        import torch_musa  # noqa: F401
    except ImportError:
        pass
    if getattr(torch, "musa", None) is not None and torch.musa.is_available():
        return "musa"
    return "cpu"


def hardware(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "cpu_count": os.cpu_count(), "machine": platform.machine()}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # which GPU of a multi-GPU box (sweep --gpus)
        info["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        info.update(gpu=torch.cuda.get_device_name(idx), cuda=torch.version.cuda,
                    gpu_count=torch.cuda.device_count())
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def library_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Python's version and each package's (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def die_with_parent() -> None:
    """In a child (Popen's preexec_fn): ask Linux to SIGKILL us when the parent dies, so kill -9
    of a sweep leaves no orphan server or build holding a port or GPU memory."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass

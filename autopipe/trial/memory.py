"""Memory release between trials that share a worker process (``gc``, ``malloc_trim``, the CUDA
allocator's cache).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Free model and optimizer memory between trials in one process: collect the reference
    cycles trainers leave (callbacks, accelerate state), return freed heap pages to the OS
    (glibc), and on CUDA empty the allocator's cache and log what stays allocated."""
    gc.collect()
    _malloc_trim()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        log.info(
            "CUDA memory after release: %d bytes allocated, %d reserved",
            torch.cuda.memory_allocated(),
            torch.cuda.memory_reserved(),
        )


def _malloc_trim() -> None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not name.startswith("libc.so"):  # glibc only (not musl, not macOS)
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        return


def trial_dir_size(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())

"""Reproducibility and hardware helpers."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ._validate import check_int


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way.

    Results are then reproducible run to run on one machine (the chapters also avoid
    non-deterministic kernels on the CPU).
    """
    check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads for torch.

    Default: ``$COMPANION_THREADS`` if set (useful when several jobs share a machine: torch's
    thread pools slow down several-fold when oversubscribed), else the cores this process may use.
    """
    if n is None and os.environ.get("COMPANION_THREADS"):
        n = int(os.environ["COMPANION_THREADS"])
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    check_int(n, "n")
    torch.set_num_threads(n)
    return n

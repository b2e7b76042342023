"""The training and test sets of the DuDoNet chapter: random phantoms paired with fixed implants.

As in the paper, implants used for testing are never seen in training: 90 fixed training implants
(areas log-uniform in 2–470 pixels) and 10 fixed test implants whose areas are the paper's test
implants (2054 … 32 pixels on 416² images) scaled by (128/416)², grouped in pairs into five groups
from large (G1) to small (G5).
"""
from __future__ import annotations

import math

import torch

from .._validate import check_int
from .phantoms import implant_masks, random_body_phantoms
from .simulate import MARData, Scanner, simulate

PAPER_TEST_AREAS = (2054, 879, 878, 448, 242, 115, 115, 111, 53, 32)
TEST_AREAS = tuple(round(a * (128 / 416) ** 2, 1) for a in PAPER_TEST_AREAS)
TRAIN_AREA_RANGE = (2.0, 470.0)


def training_set(scanner: Scanner, n: int, seed: int = 0, n_implants: int = 90) -> MARData:
    """``n`` random phantoms, each with one of ``n_implants`` fixed training implants (chosen at random)."""
    check_int(n, "n")
    check_int(n_implants, "n_implants")
    gen = torch.Generator().manual_seed(seed)
    lo, hi = map(math.log, TRAIN_AREA_RANGE)
    areas = torch.exp(lo + (hi - lo) * torch.rand(n_implants, generator=gen)).tolist()
    implants = implant_masks(areas, scanner.n_pixels, gen)
    water, bone = random_body_phantoms(n, scanner.n_pixels, gen)
    pick = torch.randint(0, n_implants, (n,), generator=gen)
    return simulate(scanner, water, bone, implants[pick], gen)


def test_set(scanner: Scanner, n: int, seed: int = 1000) -> MARData:
    """``n`` new random phantoms, the 10 fixed test implants cycled; ``group`` = implant index // 2 (G1 = 0)."""
    check_int(n, "n")
    gen = torch.Generator().manual_seed(seed)
    implants = implant_masks(TEST_AREAS, scanner.n_pixels, gen)
    water, bone = random_body_phantoms(n, scanner.n_pixels, gen)
    which = torch.arange(n) % len(TEST_AREAS)
    return simulate(scanner, water, bone, implants[which], gen, group=which // 2)

"""The shipped DuDoNet weights: their configuration, fresh modules and the training that produces them.

Registered in :mod:`companion.pretrained` as ``dudonet_small`` (``make weights`` rebuilds it). Six
networks of width 8 on 64 × 64 images, each trained from scratch with
:func:`~companion.ct.dudonet.train_mar` on the same simulated training set: the image-only U-Net and the
ablation configurations B, C, E, F and G of Table 4.1. Weights are stored in half precision to keep the file small.
"""
from __future__ import annotations

import torch
from torch import nn

from .datasets import training_set
from .dudonet import MARNet, train_mar
from .simulate import Scanner

DUDONET_SMALL = {
    "n_pixels": 64,
    "width": 8,
    "configs": ["image_only", "C", "B", "E", "F", "G"],
    "train": {"n": 2000, "seed": 0},
    "steps": 2500,
    "batch_size": 8,
    "lr": 5e-4,
    "schedule": "halve every quarter",
    "torch_seed": 0,
}


def dudonet_modules(config: dict = DUDONET_SMALL, scanner: Scanner | None = None) -> dict[str, nn.Module]:
    """Fresh (untrained) networks of every configuration of the entry."""
    scanner = scanner or Scanner(config["n_pixels"])
    return {name: MARNet(name, scanner, config["width"]) for name in config["configs"]}


def build_dudonet_small(config: dict = DUDONET_SMALL, progress: bool = True) -> dict[str, nn.Module]:
    """Train every configuration from scratch (one seed each, same data) and return the modules in half precision."""
    scanner = Scanner(config["n_pixels"])
    data = training_set(scanner, config["train"]["n"], config["train"]["seed"])
    modules = {}
    for k, name in enumerate(config["configs"]):
        torch.manual_seed(config["torch_seed"] + k)
        net = MARNet(name, scanner, config["width"])
        hist = train_mar(net, data, config["steps"], config["batch_size"], config["lr"], seed=k, progress=progress)
        print(f"{name}: {hist.seconds:.0f} s, final loss {sum(hist.loss[-100:]) / 100:.4f}", flush=True)
        modules[name] = net.half()
    return modules

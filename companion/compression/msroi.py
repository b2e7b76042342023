"""Maps of where the objects are: the multi-structure region of interest (MS-ROI) and its CAM baselines.

One network, :class:`SceneNet`, with two heads on the same convolutional trunk:

* ``head="cam"``: global average pooling and one linear layer, the class activation map (CAM) design
  of Zhou et al.; class ``c``'s map is ``M_c = Σ_d w_d^c f_d`` (eq. 2.2);
* ``head="msroi"``: a class-specific layer (eqs. 2.4-2.5): every class gets ``maps_per_class`` feature
  maps of its own, ``f_d^c``, computed from the shared trunk; class ``c``'s map is ``Σ_d f_d^c`` and
  its evidence ``Z^c`` the spatial mean of that map.

Both are trained with a per-class sigmoid (binary cross-entropy against multi-hot labels), so the two
heads see the same data and the same labels and differ only in the layer that makes the maps.
:func:`roi_map` fuses the maps of the top-ranked classes into one class-agnostic map (the paper's
"top 5, weighted by rank" rule, optionally with a probability threshold); with ``top=1`` it is the
ordinary single-class CAM. :func:`object_recall` and :func:`pixel_auc` score a map against
ground-truth objects.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_choice, check_images, check_int, check_positive

# The class-specific layer's activation: with a plain ReLU most classes' maps died in our training (negative
# everywhere, so no gradient ever reached them again) and the map showed one class; a small leak keeps them alive.
LEAK = 0.1

__all__ = ["LEAK", "SceneNet", "class_maps", "evidence", "fuse", "object_recall", "pixel_auc", "roi_map", "unit_range"]


class SceneNet(nn.Module):
    """A multi-label classifier whose head makes one map per class.

    Trunk: ``[[conv 3×3 → batch norm → ReLU] ×2 → max-pool 2] × len(widths)`` (a small VGG), so the maps have
    ``1 / 2^len(widths)`` of the image's resolution (one cell per 8 × 8 JPEG block with three stages).
    The class biases start at ``prior_logit`` (sigmoid 0.18: a few of the classes are present in a scene).
    ``head="cam"``: logits ``w^c · GAP(f) + b_c``. ``head="msroi"``: a 3 × 3 convolution and a leaky ReLU (slope :data:`LEAK`) give
    ``maps_per_class`` maps per class; logits ``a · Z^c + b_c`` with ``Z^c`` the spatial mean of
    ``Σ_d f_d^c`` and one learned scale ``a``.
    """

    def __init__(self, num_classes: int = 11, *, head: str = "msroi", widths: tuple[int, ...] = (16, 32, 64),
                 maps_per_class: int = 4, in_channels: int = 1, prior_logit: float = -1.5) -> None:
        super().__init__()
        check_int(num_classes, "num_classes")
        check_int(maps_per_class, "maps_per_class")
        self.head_kind = check_choice(head, "head", ("cam", "msroi"))
        self.in_channels, self.num_classes, self.maps_per_class = in_channels, num_classes, maps_per_class
        layers: list[nn.Module] = []
        c_in = check_int(in_channels, "in_channels")
        for width in widths:
            check_int(width, "width")
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = width
        self.trunk = nn.Sequential(*layers)
        if head == "cam":
            self.head = nn.Linear(c_in, num_classes)
            nn.init.constant_(self.head.bias, prior_logit)
        else:
            self.class_layer = nn.Conv2d(c_in, num_classes * maps_per_class, 3, padding=1)
            self.scale = nn.Parameter(torch.ones(()))
            self.bias = nn.Parameter(torch.full((num_classes,), prior_logit))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The shared trunk's maps ``f_d``, ``(B, widths[-1], H / 2^L, W / 2^L)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SceneNet expects images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.trunk(x)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """One map per class, ``(B, num_classes, h, w)``: ``Σ_d w_d^c f_d`` (CAM) or ``Σ_d f_d^c`` (MS-ROI)."""
        f = self.feature_maps(x)
        if self.head_kind == "cam":
            return torch.einsum("cd,bdhw->bchw", self.head.weight, f)
        per_class = F.leaky_relu(self.class_layer(f), LEAK)
        return per_class.unflatten(1, (self.num_classes, self.maps_per_class)).sum(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.class_maps(x)
        if self.head_kind == "cam":
            return maps.mean((2, 3)) + self.head.bias   # = head(GAP(f)), the CAM identity
        return self.scale * maps.mean((2, 3)) + self.bias


def evidence(net: SceneNet, maps: torch.Tensor) -> torch.Tensor:
    """The logits ``(B, C)`` that ``net`` computes from its class maps ``(B, C, h, w)`` (the last lines of
    :meth:`SceneNet.forward`), so that maps and logits come from one pass through the trunk."""
    if net.head_kind == "cam":
        return maps.mean((2, 3)) + net.head.bias
    return net.scale * maps.mean((2, 3)) + net.bias


def class_maps(net: SceneNet, x: torch.Tensor, *, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The class maps ``(B, C, h, w)`` and the logits ``(B, C)`` of ``net`` on ``x``, without gradients, on the CPU."""
    check_images(x)
    dev = next(net.parameters()).device
    maps, logits = [], []
    with torch.no_grad():
        for j in range(0, len(x), batch_size):
            m = net.class_maps(x[j: j + batch_size].to(dev))
            maps.append(m.cpu())
            logits.append(evidence(net, m).cpu())
    return torch.cat(maps), torch.cat(logits)


def _check_fusion(num_classes: int, top: int, threshold: float | None) -> None:
    check_int(top, "top")
    if top > num_classes:
        raise ValueError(f"top = {top} exceeds the {num_classes} classes")
    if threshold is not None and not 0 < check_positive(threshold, "threshold") < 1:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold}")


def fuse(maps: torch.Tensor, logits: torch.Tensor, size: tuple[int, int], *, top: int = 5,
         threshold: float | None = None) -> torch.Tensor:
    """The rank-weighted fusion of :func:`roi_map` on given class maps ``(B, C, h, w)`` and logits ``(B, C)``,
    upsampled to ``size``; ``(B, *size)``, non-negative, not yet rescaled per image (see :func:`unit_range`)."""
    _check_fusion(maps.shape[1], top, threshold)
    order = logits.argsort(1, descending=True)[:, :top]
    weights = torch.arange(top, 0, -1, dtype=maps.dtype, device=maps.device).expand(len(maps), top).clone()
    if threshold is not None:
        weights *= (torch.sigmoid(logits.gather(1, order)) >= threshold).to(maps.dtype)
    weights /= top * (top + 1) / 2
    chosen = maps.gather(1, order[:, :, None, None].expand(-1, -1, *maps.shape[-2:])).clamp_min(0)
    fused = (chosen * weights[:, :, None, None]).sum(1, keepdim=True)
    return F.interpolate(fused, size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map of ``(B, H, W)`` rescaled to [0, 1] by its own minimum and maximum (a constant map becomes 0)."""
    low = maps.flatten(1).amin(1).view(-1, 1, 1)
    span = maps.flatten(1).amax(1).view(-1, 1, 1) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


def roi_map(net: SceneNet, x: torch.Tensor, *, top: int = 5, threshold: float | None = None) -> torch.Tensor:
    """One class-agnostic map per image, ``(B, H, W)`` in [0, 1] (1 = most salient).

    Ranks the classes by their evidence (the logits), keeps the ``top`` ones (and, with ``threshold``, only
    those whose sigmoid probability reaches it), adds their maps (negative values clipped) with linear rank
    weights ``top, top - 1, ..., 1`` normalised to sum 1, upsamples bilinearly to the image and rescales each
    image's map to [0, 1] (a map that is zero everywhere stays zero). ``top=1`` gives the single-class CAM.
    """
    _check_fusion(net.num_classes, top, threshold)
    maps, logits = class_maps(net, x)
    return unit_range(fuse(maps, logits, tuple(x.shape[-2:]), top=top, threshold=threshold))


def object_recall(maps: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, *,
                  level: float = 0.5) -> torch.Tensor:
    """Per object, whether the map reaches ``level`` somewhere on it: ``(N, K)`` bool (False in empty slots).

    ``maps`` ``(N, H, W)``; ``masks`` ``(N, K, H, W)`` and ``classes`` ``(N, K)`` as in
    :class:`companion.data.Scenes`. The share of hits over the real objects is the map's object recall.
    """
    if maps.ndim != 3 or masks.ndim != 4 or masks.shape[0] != maps.shape[0] or masks.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"maps (N, H, W) and masks (N, K, H, W) must agree, got {tuple(maps.shape)} "
                         f"and {tuple(masks.shape)}")
    hot = (maps >= level)[:, None] & masks
    return hot.flatten(2).any(2) & (classes >= 0)


def pixel_auc(maps: torch.Tensor, regions: torch.Tensor) -> np.ndarray:
    """Per image, the ROC AUC of the map's values as a score for "this pixel is on an object" (``regions``
    ``(N, H, W)`` bool); NaN for an image without object or without background. 0.5 = chance, 1 = perfect."""
    from sklearn.metrics import roc_auc_score

    if maps.shape != regions.shape:
        raise ValueError(f"maps and regions must have the same shape, got {tuple(maps.shape)} and {tuple(regions.shape)}")
    out = np.full(len(maps), np.nan)
    for i, (m, r) in enumerate(zip(maps.flatten(1).numpy(), regions.flatten(1).numpy())):
        if 0 < r.sum() < r.size:
            out[i] = roc_auc_score(r, m)
    return out

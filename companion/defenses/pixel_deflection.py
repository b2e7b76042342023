"""Pixel deflection with robust activation maps (Prakash et al., CVPR 2018).

A randomised, non-differentiable input transform: move a few pixels to a random neighbour's value,
mostly outside the object (guided by a *robust activation map*), then remove the noise this adds, and
part of the adversarial noise, with soft wavelet thresholding (:func:`companion.defenses.wavelet_denoise`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_images, check_int, check_positive
from .wavelet import wavelet_denoise


def _check_map(keep_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    if not isinstance(keep_map, torch.Tensor) or keep_map.shape != (b, h, w):
        shape = tuple(keep_map.shape) if isinstance(keep_map, torch.Tensor) else type(keep_map).__name__
        raise ValueError(f"keep_map must be a tensor of shape {(b, h, w)} matching x, got {shape}")
    if not torch.isfinite(keep_map).all() or float(keep_map.min()) < 0 or float(keep_map.max()) > 1:
        raise ValueError("keep_map must hold finite values in [0, 1]")
    return keep_map


def deflect(x: torch.Tensor, deflections: int, window: int, *, keep_map: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixel deflection (Algorithm 2 of the paper), batched: ``K = deflections`` pixels per image.

    Each deflection picks a pixel ``p`` and replaces it (all channels) by the *original* value of a
    pixel drawn uniformly from the ``(2r+1)×(2r+1)`` window around ``p`` clipped to the image
    (``r = window``; the pixel itself may be drawn). Without ``keep_map`` the ``p`` are uniform.
    With a map ``M`` of shape ``(B, H, W)`` in [0, 1], the paper draws ``p`` uniformly and deflects
    it only if ``M(p) < u``, ``u ~ U(0, 1)``, until ``K`` deflections are made; the executed
    ``p`` are then i.i.d. with probability ∝ ``1 − M(p)``, which is how we sample them (exactly,
    with no rejection loop). An image whose map is 1 everywhere is left unchanged.
    """
    check_images(x)
    k = check_int(deflections, "deflections", minimum=0)
    r = check_int(window, "window")
    b, c, h, w = x.shape
    if k == 0:
        return x.clone()
    kw = {"generator": generator, "device": "cpu"}
    if keep_map is None:
        target = torch.randint(0, h * w, (b, k), **kw)
        active = torch.ones(b, 1, dtype=torch.bool)
    else:
        weights = (1 - _check_map(keep_map, x)).flatten(1).detach().cpu().double()
        active = weights.sum(1, keepdim=True) > 0
        target = torch.multinomial(torch.where(active, weights, torch.ones_like(weights)), k, replacement=True,
                                   generator=generator)
    rows, cols = target // w, target % w

    def neighbour(coord: torch.Tensor, size: int) -> torch.Tensor:
        lo, hi = (coord - r).clamp(min=0), (coord + r).clamp(max=size - 1)
        return lo + (torch.rand(coord.shape, **kw) * (hi - lo + 1)).long().clamp(max=hi - lo)

    source = neighbour(rows, h) * w + neighbour(cols, w)
    source, target = source.to(x.device), target.to(x.device)
    source = torch.where(active.to(x.device), source, target)  # inactive images copy pixels onto themselves
    flat = x.reshape(b, c, h * w)
    values = flat.gather(2, source.unsqueeze(1).expand(b, c, k))
    return flat.clone().scatter_(2, target.unsqueeze(1).expand(b, c, k), values).view_as(x)


def _cam_parts(model: nn.Module) -> tuple[torch.nn.Module, torch.Tensor]:
    if not hasattr(model, "feature_maps") or not isinstance(getattr(model, "head", None), nn.Linear):
        raise TypeError("the model needs a global-average-pooling head: a `feature_maps(x)` method and a linear `head` "
                        "(e.g. companion.nets.CAMNet)")
    return model, model.head.weight


def class_activation_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAMs ``M_c(i, j) = Σ_j w_j^c f_j(i, j)`` for ``classes`` of shape ``(B, k)``: ``(B, k, h, w)`` (feature resolution)."""
    model, weight = _cam_parts(model)
    with torch.no_grad():
        fmap = model.feature_maps(x)
        return torch.einsum("bkj,bjhw->bkhw", weight[classes], fmap)


def robust_activation_map(model: nn.Module, x: torch.Tensor, top_k: int = 3) -> torch.Tensor:
    """R-CAM (eq. 4.5): ``Σ_{i=1..k} M_{c_i} / 2^i`` over the top-``k`` predicted classes, upsampled
    (bilinear) to the image size, negatives clipped to 0 and divided by its maximum: ``(B, H, W)`` in [0, 1].

    Averaging over the top classes keeps the map on the object even when an attack has moved the
    top-1 class, because attacks usually leave the true class among the top few.
    """
    check_images(x)
    check_int(top_k, "top_k")
    with torch.no_grad():
        logits = model(x)
        if top_k > logits.shape[1]:
            raise ValueError(f"top_k = {top_k} exceeds the {logits.shape[1]} classes")
        top = logits.topk(top_k, dim=1).indices
        cams = class_activation_maps(model, x, top)
        decay = 0.5 ** torch.arange(1, top_k + 1, device=x.device, dtype=cams.dtype)
        m = (cams * decay.view(1, -1, 1, 1)).sum(1, keepdim=True)
        m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
        return m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


@dataclass
class PixelDeflection:
    """The full defense as a callable transform ``x -> T(x)``: R-CAM-guided deflection, then wavelet denoising.

    ``use_map=False`` deflects uniformly; ``deflections=0`` or ``denoise=False`` give the ablations
    "denoising only" and "deflection only". ``model`` (CAM-ready) is needed only with ``use_map``.
    """

    model: nn.Module | None = None
    deflections: int = 100
    window: int = 10
    sigma: float = 0.04
    top_k: int = 5
    use_map: bool = True
    denoise: bool = True
    method: str = "bayes"
    mode: str = "soft"
    wavelet: str = "db1"

    def __post_init__(self) -> None:
        check_int(self.deflections, "deflections", minimum=0)
        check_int(self.window, "window")
        check_positive(self.sigma, "sigma")
        check_int(self.top_k, "top_k")
        if self.use_map and self.model is None:
            raise ValueError("use_map=True needs the (CAM-ready) classifier as `model`")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        keep = robust_activation_map(self.model, x, self.top_k) if self.use_map else None
        out = deflect(x, self.deflections, self.window, keep_map=keep, generator=generator)
        if self.denoise:
            out = wavelet_denoise(out, self.sigma, wavelet=self.wavelet, method=self.method, mode=self.mode)
        return out

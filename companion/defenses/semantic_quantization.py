"""Semantic quantization: JPEG that keeps the object and crushes the background, as a defense (Prakash et al. 2018).

An attack spreads its perturbation over the whole image; plain JPEG removes some of it but, made harsher,
removes the object too. Semantic quantization reuses the variable-quality JPEG of the semantic compression
chapter (:mod:`companion.compression.jpeg`): a map of where the object is gives each 8 × 8 block its quality,
gentle on the object and harsh elsewhere. Because the map's own network can be fooled by the same
perturbation, Augmented MS-ROI averages the map over random perturbations of the input and of the network's
activations.

* :func:`aug_roi_map` -- the Augmented MS-ROI map (``draws = 1`` with no noise and no shift is the plain map);
* :func:`jpeg` and :class:`SemanticQuantization` -- plain JPEG and the semantic transform, ``(B, 1, H, W)``
  tensors in, decoded JPEG tensors out (use them with :class:`~companion.defenses.Preprocessed`);
* :func:`random_block_map` -- a control map with random per-block values (does the semantics matter?);
* :func:`rescale_to_rmse` -- the paper's operating point: every attack's perturbation scaled to one RMSE;
* :func:`mass_ratio` and :func:`map_correlation` -- where a perturbation or a map puts its mass, and how
  stable a map is under attack.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._validate import check_images, check_int, check_positive
from ..compression.jpeg import block_levels, decode, encode, level_mosaic
from ..compression.msroi import SceneNet, evidence, fuse, unit_range

__all__ = ["SemanticQuantization", "aug_roi_map", "jpeg", "map_correlation", "mass_ratio", "random_block_map",
           "rescale_to_rmse"]

MapFn = Callable[[Tensor], Tensor]


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        return torch.Generator().manual_seed(int(torch.randint(2**31 - 1, ()).item()))
    return torch.Generator().manual_seed(check_int(generator, "generator", minimum=0))


def aug_roi_map(net: SceneNet, x: Tensor, *, draws: int = 8, input_noise: float = 0.05, feature_noise: float = 0.1,
                shift: int = 2, top: int = 5, threshold: float | None = None,
                generator: torch.Generator | int | None = None) -> Tensor:
    """The Augmented MS-ROI map (§3.6): the mean over ``draws`` jittered passes of the fused map of :func:`~companion.compression.roi_map`.

    Each draw shifts the image by a random whole number of pixels in ``[-shift, shift]`` (both axes), adds
    Gaussian noise of standard deviation ``input_noise`` to it, and, after each stage of the trunk, Gaussian
    noise of ``feature_noise`` times each channel's own spatial standard deviation to the activations; the
    draw's class maps are fused (top ``top`` classes by that draw's evidence, rank-weighted) and shifted back.
    The mean of the draws is rescaled to [0, 1] per image: ``(B, H, W)``. Randomness comes from
    ``generator`` (a ``torch.Generator`` or a seed; with ``None`` a seed is drawn once from torch's global
    generator, so only a given generator or seed makes the map reproducible). With ``draws=1``,
    no noise and ``shift=0`` the result is :func:`~companion.compression.roi_map`'s.
    """
    x = check_images(x, "x")
    draws = check_int(draws, "draws")
    shift = check_int(shift, "shift", minimum=0)
    check_positive(input_noise, "input_noise", allow_zero=True)
    check_positive(feature_noise, "feature_noise", allow_zero=True)
    gen = _generator(generator)
    dev = next(net.parameters()).device
    stages = [m for m in net.trunk if isinstance(m, nn.MaxPool2d)]

    def jitter(_module: nn.Module, _inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        noise = torch.randn(out.shape, generator=gen).to(out.device)
        return out + feature_noise * out.std(dim=(2, 3), keepdim=True) * noise

    hooks = [m.register_forward_hook(jitter) for m in stages] if feature_noise > 0 else []
    total = torch.zeros(x.shape[0], *x.shape[-2:])
    try:
        with torch.no_grad():
            for _ in range(draws):
                dy, dx = (torch.randint(-shift, shift + 1, (2,), generator=gen) if shift else torch.zeros(2, dtype=torch.long)).tolist()
                noisy = torch.roll(x.cpu(), (dy, dx), dims=(2, 3)) + input_noise * torch.randn(x.shape, generator=gen)
                maps = net.class_maps(noisy.to(dev))
                fused = fuse(maps, evidence(net, maps), tuple(x.shape[-2:]), top=top, threshold=threshold).cpu()
                total += torch.roll(fused, (-dy, -dx), dims=(1, 2))
    finally:
        for h in hooks:
            h.remove()
    return unit_range(total / draws).to(x.device)


def _to_uint8(x: Tensor) -> np.ndarray:
    return (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _from_uint8(images: list[np.ndarray], like: Tensor) -> Tensor:
    return torch.from_numpy(np.stack(images)).to(like.dtype).div(255).unsqueeze(1).to(like.device)


def _check_grey(x: Tensor) -> Tensor:
    x = check_images(x, "x")
    if x.shape[1] != 1:
        raise ValueError(f"the JPEG transforms take greyscale images (B, 1, H, W), got {tuple(x.shape)}")
    return x


def jpeg(x: Tensor, quality: float) -> Tensor:
    """Plain JPEG: each image of ``x`` ``(B, 1, H, W)`` in [0, 1] encoded at IJG ``quality`` and decoded."""
    x = _check_grey(x)
    return _from_uint8([decode(encode(img, quality)) for img in _to_uint8(x[:, 0])], x)


@dataclass
class SemanticQuantization:
    """The transform ``T(x)`` of §3.5: block levels from ``map_fn(x)``, the level mosaic, one final JPEG pass.

    ``map_fn`` maps images ``(B, 1, H, W)`` to maps ``(B, H, W)`` in [0, 1] (e.g. ``lambda x: aug_roi_map(net, x)``);
    each 8 × 8 block gets level ``floor(k · mean map)`` (:func:`~companion.compression.block_levels`) and the
    pixels of the image JPEG-decoded at ``qualities[level]`` (:func:`~companion.compression.level_mosaic`); the
    mosaic is encoded once more at ``final_quality`` (default: the highest level's quality), so the output is
    what a standard decoder shows of a standard JPEG file.
    """

    map_fn: MapFn
    qualities: Sequence[float]
    final_quality: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.map_fn):
            raise TypeError(f"map_fn must be callable, got {type(self.map_fn).__name__}")
        self.qualities = tuple(float(q) for q in self.qualities)
        if len(self.qualities) < 2 or list(self.qualities) != sorted(self.qualities):
            raise ValueError(f"qualities must be at least two ascending JPEG qualities, got {self.qualities}")

    def levels(self, x: Tensor, maps: Tensor | None = None) -> np.ndarray:
        """The block levels ``(B, H/8, W/8)`` for ``x``, from ``maps`` ``(B, H, W)`` or else ``map_fn(x)``."""
        x = _check_grey(x)
        maps = self.map_fn(x) if maps is None else maps
        if not isinstance(maps, Tensor) or maps.shape != (x.shape[0], *x.shape[-2:]):
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(f"the maps must have shape {(x.shape[0], *x.shape[-2:])}, got {shape}")
        return np.stack([block_levels(m, k=len(self.qualities)) for m in maps.detach().cpu().numpy()])

    def apply(self, x: Tensor, maps: Tensor | None = None) -> Tensor:
        """``T(x)`` with the given ``maps`` (e.g. computed once for several quality ladders) or ``map_fn(x)``."""
        levels = self.levels(x, maps)
        final = self.qualities[-1] if self.final_quality is None else self.final_quality
        out = [decode(encode(level_mosaic(img, lv, self.qualities), final)) for img, lv in zip(_to_uint8(x[:, 0]), levels)]
        return _from_uint8(out, x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.apply(x)


def random_block_map(x: Tensor, generator: torch.Generator | int | None = None, block: int = 8) -> Tensor:
    """A control map ``(B, H, W)``: one uniform random value per ``block`` × ``block`` block, from ``generator``
    (as in :func:`aug_roi_map`: ``None`` seeds it from torch's global generator)."""
    x = check_images(x, "x")
    gen = _generator(generator)
    h, w = (-(-s // block) for s in x.shape[-2:])
    values = torch.rand(x.shape[0], h, w, generator=gen)
    return values.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, : x.shape[-2], : x.shape[-1]].to(x.device)


def rescale_to_rmse(x: Tensor, x_adv: Tensor, rmse: float) -> Tensor:
    """``clip[0,1](x + δ · rmse·√n / ‖δ‖₂)`` with ``δ = x_adv − x``: each attack's direction at one RMSE budget.

    The paper runs every attack at the same root-mean-square perturbation (0.02 on ImageNet); this puts any
    attack's output there (clipping to [0, 1] can leave a slightly smaller RMSE). An image whose
    perturbation is zero stays ``x``.
    """
    x, x_adv = check_images(x, "x"), check_images(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    check_positive(rmse, "rmse")
    delta = (x_adv - x).flatten(1)
    norm = delta.norm(dim=1, keepdim=True)
    scale = torch.where(norm > 0, rmse * delta.shape[1] ** 0.5 / norm.clamp_min(1e-12), torch.zeros_like(norm))
    return (x.flatten(1) + delta * scale).clamp(0, 1).view_as(x)


def mass_ratio(weights: Tensor, masks: Tensor) -> Tensor:
    """Per image, the share of ``weights``' mass inside ``masks`` divided by the mask's share of the area.

    ``weights`` ``(B, H, W)`` non-negative (``|δ|`` or a map), ``masks`` ``(B, H, W)`` bool. 1 means no
    preference for the object, above 1 a concentration on it; NaN where the weights or the mask are empty.
    """
    if weights.shape != masks.shape or weights.ndim != 3:
        raise ValueError(f"weights and masks must both be (B, H, W), got {tuple(weights.shape)} and {tuple(masks.shape)}")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    w, m = weights.flatten(1).double(), masks.flatten(1).double()
    share = (w * m).sum(1) / w.sum(1)
    area = m.mean(1)
    return torch.where((w.sum(1) > 0) & (area > 0), share / area.clamp_min(1e-12), torch.full_like(area, float("nan")))


def map_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Per image, the Pearson correlation of two maps ``(B, H, W)`` (NaN where one of them is constant)."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must both be (B, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))

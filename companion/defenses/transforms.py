"""Simple input transforms and the wrapper that puts one in front of a classifier.

These are the toy defenses of the foundations chapter: bit-depth reduction (a non-differentiable
transform whose gradient is zero almost everywhere), additive noise and pixel dropout (randomised
transforms); and the baselines that Prakash et al. (2018) compare pixel deflection with: median smoothing
(with bit-depth reduction, Xu et al.'s feature squeezing), total-variation denoising and random resizing and
padding.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._validate import check_choice, check_images, check_int, check_positive


def quantize(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Bit-depth reduction: round each pixel of ``x`` in [0, 1] to the nearest of ``levels`` values.

    ``levels = 2`` binarises. The output is piecewise constant in ``x``, so its gradient is zero
    almost everywhere: a gradient attack run through it learns nothing.
    """
    check_images(x)
    check_int(levels, "levels", minimum=2)
    return torch.round(x * (levels - 1)) / (levels - 1)


def gaussian_noise(x: torch.Tensor, sigma: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add fresh N(0, σ²) noise to every pixel of ``x`` and clip to [0, 1]: a randomised transform."""
    check_images(x)
    check_positive(sigma, "sigma")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp(0, 1)


def pixel_dropout(x: torch.Tensor, rate: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set each pixel of ``x`` to 0 with probability ``rate``, a fresh draw at every call (all channels of a
    pixel together): a randomised transform whose single-draw gradient is a poor guide to the next draw."""
    check_images(x)
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"rate must lie in [0, 1), got {rate!r}")
    shape = (x.shape[0], 1, *x.shape[2:])
    keep = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) >= rate
    return x * keep


class Preprocessed(nn.Module):
    """The defended classifier ``f(T(x))``: apply ``transform`` to the input, then ``model``."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], model: nn.Module) -> None:
        super().__init__()
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))


def majority_vote(model: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, runs: int = 10,
                  *, batch_size: int = 512) -> torch.Tensor:
    """Ensemble inference for a randomised transform: classify ``transform(x)`` ``runs`` times and
    return the majority label per image (ties broken by the summed softmax). ``runs = 10`` is the
    paper's "Ens-10"."""
    check_images(x)
    check_int(runs, "runs")
    with torch.no_grad():
        scores = []
        for i in range(0, len(x), batch_size):
            xb = x[i: i + batch_size]
            votes, prob = None, None
            for _ in range(runs):
                logits = model(transform(xb))
                one_hot = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)
                p = logits.softmax(1)
                votes = one_hot if votes is None else votes + one_hot
                prob = p if prob is None else prob + p
            scores.append(votes + prob / (runs + 1))  # summed softmax < runs + 1: it only breaks ties
        return torch.cat(scores).argmax(1)


# --------------------------------------------------------------------------- baselines of Prakash et al.'s Table 4.6
def median_filter(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Median smoothing, one of Xu et al.'s (2018) feature squeezers: each pixel of each channel becomes
    the median of the ``size × size`` window around it (scipy's ``median_filter``, borders reflected).

    Xu et al. use 2 × 2 on MNIST and 2 × 2 or 3 × 3 on colour images. An even window is placed as scipy
    places it (its centre pixel is the lower-right of the middle four), and scipy's median of an even
    number of values is the upper of the two middle values.
    """
    from scipy import ndimage

    check_images(x)
    check_int(size, "size")
    arr = x.detach().cpu().numpy()
    out = ndimage.median_filter(arr, size=(1, 1, size, size), mode="reflect")
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def tv_denoise(x: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """Total-variation denoising (Rudin, Osher and Fatemi 1992) with Chambolle's (2004) algorithm,
    scikit-image's ``denoise_tv_chambolle`` image by image (colour images jointly over channels).

    ``weight`` trades smoothness for fidelity (larger: smoother). A stand-in for the total-variation
    minimisation of Guo et al. (2018), which reconstructs from a random subset of pixels.
    """
    from skimage.restoration import denoise_tv_chambolle

    check_images(x)
    check_positive(weight, "weight")
    arr = x.detach().cpu().double().numpy()
    if arr.shape[1] == 1:
        out = np.stack([denoise_tv_chambolle(img[0], weight=weight) for img in arr])[:, None]
    else:
        out = np.stack([denoise_tv_chambolle(img, weight=weight, channel_axis=0) for img in arr])
    return torch.from_numpy(np.clip(out, 0, 1)).to(device=x.device, dtype=x.dtype)


def random_resize_pad(x: torch.Tensor, size: int, *, mode: str = "nearest",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resizing and padding (Xie et al. 2018): a randomised transform ``(B, C, H, W) -> (B, C, size, size)``.

    Each image is resized to a random ``s × s`` with ``s`` uniform in ``{H, ..., size − 1}`` (``mode`` as in
    ``torch.nn.functional.interpolate``; Xie et al. use nearest neighbours) and placed at a uniform random
    offset on a ``size × size`` canvas of zeros. Xie et al. map 299-pixel images to 331; a classifier
    with global average pooling accepts the larger image as it is. Square images only.
    """
    check_images(x)
    b, c, h, w = x.shape
    if h != w:
        raise ValueError(f"random_resize_pad needs square images, got {h} × {w}")
    size = check_int(size, "size", minimum=h + 1)
    check_choice(mode, "mode", ("nearest", "bilinear", "bicubic", "area"))
    scales = torch.randint(h, size, (b,), generator=generator)
    out = x.new_zeros(b, c, size, size)
    for s in scales.unique().tolist():
        idx = (scales == s).nonzero().squeeze(1)
        kw = {} if mode in ("nearest", "area") else {"align_corners": False}
        resized = torch.nn.functional.interpolate(x[idx.to(x.device)], size=(s, s), mode=mode, **kw).clamp(0, 1)
        top = torch.randint(0, size - s + 1, (len(idx),), generator=generator)
        left = torch.randint(0, size - s + 1, (len(idx),), generator=generator)
        for j, i in enumerate(idx.tolist()):
            t, l_ = int(top[j]), int(left[j])
            out[i, :, t: t + s, l_: l_ + s] = resized[j]
    return out

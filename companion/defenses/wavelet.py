"""Batched wavelet-thresholding denoiser (BayesShrink / VisuShrink, soft / hard) with PyWavelets.

Matches ``skimage.restoration.denoise_wavelet`` with a given ``sigma`` image by image (tested), but
transforms a whole batch in one PyWavelets call instead of looping over images.
"""
from __future__ import annotations

import math

import numpy as np
import pywt
import torch

from .._validate import check_choice, check_images, check_int, check_positive
from ..compression.jpeg import JPEG_YCBCR

_YCBCR = JPEG_YCBCR
_YCBCR_INV = np.linalg.inv(_YCBCR)
_OFFSET = np.array([0.0, 0.5, 0.5])


def wavelet_denoise(x: torch.Tensor, sigma: float = 0.04, *, wavelet: str = "db1", method: str = "bayes",
                    mode: str = "soft", levels: int | None = None, ycbcr: bool = True) -> torch.Tensor:
    """Denoise a batch ``(B, C, H, W)`` in [0, 1] by thresholding its wavelet detail coefficients.

    ``method="bayes"`` (BayesShrink) uses, per image and detail sub-band ``d``, the threshold
    ``T = σ² / sqrt(max(mean(d²) − σ², ε))``; ``method="visu"`` (VisuShrink) the universal threshold
    ``T = σ sqrt(2 log(HW))``. ``mode="soft"`` shrinks every coefficient, ``sign(d) max(|d| − T, 0)``;
    ``"hard"`` zeroes those below ``T`` and keeps the rest. The approximation band is untouched.
    ``levels`` defaults to scikit-image's choice, ``max(max_level − 3, 1)``. RGB images are denoised
    channel by channel in YCbCr (``ycbcr=True``), which decorrelates the channels. Output clipped to [0, 1].
    """
    check_images(x)
    var = check_positive(sigma, "sigma") ** 2
    check_choice(method, "method", ("bayes", "visu"))
    check_choice(mode, "mode", ("soft", "hard"))
    w = pywt.Wavelet(check_choice(wavelet, "wavelet", pywt.wavelist(kind="discrete")))
    b, c, h, wd = x.shape
    arr = x.detach().cpu().double().numpy()
    use_ycbcr = ycbcr and c == 3
    if use_ycbcr:
        arr = np.einsum("ij,bjhw->bihw", _YCBCR, arr) + _OFFSET.reshape(1, 3, 1, 1)
    if levels is None:
        levels = max(pywt.dwtn_max_level((h, wd), w) - 3, 1)
    check_int(levels, "levels")
    coeffs = pywt.wavedecn(arr.reshape(b * c, h, wd), w, level=levels, axes=(-2, -1))
    universal = math.sqrt(var) * math.sqrt(2 * math.log(h * wd))
    out = [coeffs[0]]
    for band in coeffs[1:]:
        shrunk = {}
        for key, d in band.items():
            if method == "bayes":
                signal = np.sqrt(np.maximum((d * d).mean(axis=(-2, -1), keepdims=True) - var, np.finfo(d.dtype).eps))
                t = var / signal
            else:
                t = universal
            shrunk[key] = np.sign(d) * np.maximum(np.abs(d) - t, 0) if mode == "soft" else d * (np.abs(d) >= t)
        out.append(shrunk)
    rec = pywt.waverecn(out, w, axes=(-2, -1))[:, :h, :wd].reshape(b, c, h, wd)
    if use_ycbcr:
        rec = np.einsum("ij,bjhw->bihw", _YCBCR_INV, rec - _OFFSET.reshape(1, 3, 1, 1))
    return torch.from_numpy(np.clip(rec, 0, 1)).to(device=x.device, dtype=x.dtype)


def _haar_split(a: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One orthonormal 2-D Haar step on ``(N, H, W)`` (even H, W): the approximation and three detail bands."""
    p, q = a[:, 0::2, 0::2], a[:, 0::2, 1::2]
    r, s = a[:, 1::2, 0::2], a[:, 1::2, 1::2]
    return (p + q + r + s) / 2, ((p - q + r - s) / 2, (p + q - r - s) / 2, (p - q - r + s) / 2)


def _haar_merge(approx: torch.Tensor, details: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The inverse of :func:`_haar_split`."""
    h, v, d = details
    n, hh, ww = approx.shape
    out = approx.new_empty(n, 2 * hh, 2 * ww)
    out[:, 0::2, 0::2] = (approx + h + v + d) / 2
    out[:, 0::2, 1::2] = (approx - h + v - d) / 2
    out[:, 1::2, 0::2] = (approx + h - v - d) / 2
    out[:, 1::2, 1::2] = (approx - h - v + d) / 2
    return out


def haar_denoise(x: torch.Tensor, sigma: float = 0.04, *, levels: int | None = None,
                 ycbcr: bool = True) -> torch.Tensor:
    """Soft BayesShrink with the Haar wavelet in torch: differentiable almost everywhere.

    The same transform as ``wavelet_denoise(x, sigma)`` with its defaults (``db1``, soft BayesShrink,
    scikit-image's number of levels, YCbCr for RGB; tested to agree), for images whose sides are
    divisible by ``2**levels``, written with tensor operations so that gradients flow through it.
    An adaptive attacker can use it as the backward pass of BPDA (``bpda(defense, approx=haar_denoise)``)
    instead of the identity: the gradient then sees the denoiser that removes part of its perturbation.
    """
    check_images(x)
    var = check_positive(sigma, "sigma") ** 2
    b, c, h, wd = x.shape
    if levels is None:
        levels = max(pywt.dwtn_max_level((h, wd), "db1") - 3, 1)
    check_int(levels, "levels")
    if h % 2 ** levels or wd % 2 ** levels:
        raise ValueError(f"haar_denoise needs sides divisible by 2**levels = {2 ** levels}, got {h} × {wd}")
    use_ycbcr = ycbcr and c == 3
    matrix = torch.as_tensor(_YCBCR, dtype=x.dtype, device=x.device)
    offset = torch.as_tensor(_OFFSET, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    a = torch.einsum("ij,bjhw->bihw", matrix, x) + offset if use_ycbcr else x
    a = a.reshape(b * c, h, wd)
    bands = []
    for _ in range(levels):
        a, details = _haar_split(a)
        shrunk = []
        for d in details:
            signal = ((d * d).mean(dim=(-2, -1), keepdim=True) - var).clamp_min(np.finfo(np.float64).eps).sqrt()
            t = var / signal
            shrunk.append(d.sign() * (d.abs() - t).clamp_min(0))
        bands.append(tuple(shrunk))
    for details in reversed(bands):
        a = _haar_merge(a, details)
    out = a.reshape(b, c, h, wd)
    if use_ycbcr:
        out = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(matrix), out - offset)
    return out.clamp(0, 1)

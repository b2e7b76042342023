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

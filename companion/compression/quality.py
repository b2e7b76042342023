"""Quality of a decoded image against its reference: luma (BT.601) first, RGB second, inside and outside a region.

The paper's numbers (Table 2.1) were computed on the luma plane only, SSIM with the 11×11 Gaussian window of
σ = 1.5 of Wang et al. (2004); so are the primary metrics here. Luma is ``Y = 0.299 R + 0.587 G + 0.114 B`` on
0..255, unrounded (a grayscale image is its own luma). PSNR goes through the companion's one formula
(:func:`companion.metrics.psnr_from_mse`) and SSIM through :func:`companion.metrics.ssim`; PSNR-HVS, PSNR-HVS-M,
VIFp and MS-SSIM come from maintained packages (``psnr_hvsm``, ``piq``), not from code of ours.

Arguments are ``(reference, decoded)``: two ``uint8`` arrays of the same shape, ``(H, W)`` or ``(H, W, 3)``, and
where a region is asked for, a boolean ``(H, W)`` mask (true inside the region).
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np
import torch

from .._validate import check_choice
from ..metrics import psnr_from_mse, ssim
from .jpeg import JPEG_YCBCR, _check_image

__all__ = ["BT601_LUMA", "MS_SSIM_MIN_SIDE", "QUALITY_KEYS", "luma", "masked_psnr", "masked_ssim", "ms_ssim",
           "psnr_hvs", "quality_row", "vifp"]

# The BT.601 weights of R, G and B in the luma Y (full range, as JPEG's YCbCr)
BT601_LUMA = tuple(float(w) for w in JPEG_YCBCR[0])

# The smallest side MS-SSIM accepts: (11 − 1) · 2⁴ + 1 pixels, the 11×11 window at the fifth scale
MS_SSIM_MIN_SIDE = 161

# The keys of :func:`quality_row`, in the order of the table
QUALITY_KEYS = ("psnr_y", "psnr_y_roi", "psnr_y_background", "ssim_y", "ssim_y_roi", "ssim_y_background",
                "psnr_rgb", "psnr_hvs", "psnr_hvsm", "ms_ssim", "vifp")

_SPACES = ("y", "rgb")
_SSIM_BORDER = 5   # pixels of the Gaussian SSIM map left out of its mean (half the 11×11 window)


def _check_pair(reference: Any, decoded: Any) -> tuple[np.ndarray, np.ndarray]:
    reference, decoded = _check_image(reference, "reference"), _check_image(decoded, "decoded")
    if reference.shape != decoded.shape:
        raise ValueError(f"reference and decoded must have the same shape, got {reference.shape} and {decoded.shape}")
    return reference, decoded


def _check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean numpy array (H, W), true inside the region, got "
                        + (f"dtype {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__))
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"{name} must have the image's shape (H, W) = {tuple(shape[:2])}, got {mask.shape}")
    return mask


def luma(image: np.ndarray) -> np.ndarray:
    """The BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of a ``uint8`` image, float64 ``(H, W)`` on 0..255, unrounded.

    A grayscale image is returned as float64 unchanged.
    """
    image = _check_image(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    return image.astype(np.float64) @ np.asarray(BT601_LUMA)


def _planes(image: np.ndarray, space: str) -> np.ndarray:
    """``(C, H, W)`` float64 planes: the luma, or every channel."""
    if space == "y" or image.ndim == 2:
        return luma(image)[None]
    return np.moveaxis(image.astype(np.float64), -1, 0)


def masked_psnr(reference: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None, *,
                space: str = "y") -> float:
    """PSNR in dB (peak 255) with the MSE over the pixels of ``mask`` only (over all pixels without one).

    ``space="y"``: on luma (:func:`luma`); ``"rgb"``: over every channel of those pixels (the same for a grayscale
    image). Identical pixels give ``inf``; an empty mask raises ``ValueError``.
    """
    reference, decoded = _check_pair(reference, decoded)
    check_choice(space, "space", _SPACES)
    keep = np.ones(reference.shape[:2], bool) if mask is None else _check_mask(mask, reference.shape)
    if not keep.any():
        raise ValueError("mask selects no pixel: the MSE over an empty region is undefined")
    error = (_planes(reference, space) - _planes(decoded, space))[:, keep]
    return float(psnr_from_mse(torch.tensor(float(np.mean(error**2)), dtype=torch.float64), 255.0))


def masked_ssim(reference: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None, *,
                space: str = "y") -> float:
    """SSIM with the Gaussian window (11×11, σ = 1.5, population covariance, data range 255), averaged over a region.

    :func:`companion.metrics.ssim` with ``gaussian=True``: the mean of the SSIM map over the pixels of ``mask``
    (all pixels without one), leaving out the 5-pixel border where the window leans on reflected pixels, as
    scikit-image's mean does. ``space="y"`` on luma, ``"rgb"`` the mean over the three channels' maps. Images must
    be at least 11×11; a mask with no pixel inside the border raises ``ValueError``.
    """
    reference, decoded = _check_pair(reference, decoded)
    check_choice(space, "space", _SPACES)
    if mask is not None:
        mask = torch.from_numpy(_check_mask(mask, reference.shape).copy())[None]
    a, b = (torch.from_numpy(_planes(im, space))[None] for im in (decoded, reference))
    return float(ssim(a, b, 255.0, gaussian=True, mask=mask))


def _luma_unit(image: np.ndarray) -> np.ndarray:
    return luma(image) / 255.0


def psnr_hvs(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """PSNR-HVS and PSNR-HVS-M in dB on luma, through the ``psnr_hvsm`` package (its NumPy backend).

    The package compares non-overlapping 8×8 DCT blocks of images in [0, 1] (luma / 255 here), so only the top-left
    ``8·floor(H/8) × 8·floor(W/8)`` pixels count (as in the C++ reference, which skips partial blocks); images must
    be at least 8×8. The package's weighted MSEs go through :func:`companion.metrics.psnr_from_mse` (peak 1), so
    identical images give ``inf`` where the package would print its cap of 100 dB.
    """
    reference, decoded = _check_pair(reference, decoded)
    h, w = (reference.shape[0] // 8) * 8, (reference.shape[1] // 8) * 8
    if h == 0 or w == 0:
        raise ValueError(f"PSNR-HVS needs images of at least 8x8 pixels, got {reference.shape[:2]}")
    with contextlib.redirect_stdout(io.StringIO()):   # the package prints a note about its PyTorch backend
        from psnr_hvsm.numpy import hvs_hvsm_mse
    with np.errstate(divide="ignore", invalid="ignore"):   # flat blocks: 0/0 that the package then discards
        mse_hvs, mse_hvsm = hvs_hvsm_mse(_luma_unit(reference)[:h, :w], _luma_unit(decoded)[:h, :w])
    values = psnr_from_mse(torch.tensor([float(mse_hvs), float(mse_hvsm)], dtype=torch.float64), 1.0)
    return float(values[0]), float(values[1])


def _tensor(image: np.ndarray) -> torch.Tensor:
    """Luma / 255 as a ``(1, 1, H, W)`` float32 tensor for ``piq``.

    float32, not float64: piq's float64 convolutions have no fast CPU kernel (one thread, 512×512 luma: VIFp 2.5 s
    and MS-SSIM 1.2 s in float64, 0.2 s and 0.16 s in float32). The price, measured on the camera photo at JPEG
    quality 50 (its flat sky is the worst case for the ``E[x²] − E[x]²`` variances piq forms on a 0..255 scale):
    VIFp 1.6e-4 higher, MS-SSIM 2e-5 higher, and a VIFp difference between two encodings 3e-5 off; Table 2.1's
    differences are 1e-3 and more.
    """
    return torch.from_numpy(_luma_unit(image).astype(np.float32))[None, None]


def vifp(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Pixel-domain visual information fidelity (VIFp) on luma, ``piq.vif_p`` (1 = as informative as the reference).

    Four scales; images must be at least 41×41 pixels.
    """
    import piq

    reference, decoded = _check_pair(reference, decoded)
    if min(reference.shape[:2]) < 41:
        raise ValueError(f"VIFp needs images of at least 41x41 pixels (four scales), got {reference.shape[:2]}")
    with torch.no_grad():
        return float(piq.vif_p(_tensor(decoded), _tensor(reference), data_range=1.0))


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Multi-scale SSIM on luma, ``piq.multi_scale_ssim``: five scales, 11×11 Gaussian window, σ = 1.5, the weights
    0.0448, 0.2856, 0.3001, 0.2363, 0.1333 of Wang et al. (2003).

    Images must be at least :data:`MS_SSIM_MIN_SIDE` (161) pixels per side, so that the window still fits at the
    fifth scale; smaller ones raise ``ValueError`` (:func:`quality_row` reports NaN for them instead).
    """
    import piq

    reference, decoded = _check_pair(reference, decoded)
    if min(reference.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"MS-SSIM with 5 scales needs images of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE} "
                         f"pixels, got {reference.shape[:2]}")
    with torch.no_grad():
        return float(piq.multi_scale_ssim(_tensor(decoded), _tensor(reference), data_range=1.0,
                                          kernel_size=11, kernel_sigma=1.5))


def _inner(mask: np.ndarray) -> bool:
    """Whether ``mask`` has a pixel outside the border that the SSIM mean leaves out."""
    b = _SSIM_BORDER
    return bool(mask[b:-b, b:-b].any())


def quality_row(reference: np.ndarray, decoded: np.ndarray, roi_mask: np.ndarray) -> dict[str, float]:
    """Every column of a Table 2.1 row for one image, plus the region split, as a dict with :data:`QUALITY_KEYS`.

    On luma: ``psnr_y``, ``psnr_y_roi`` and ``psnr_y_background`` (inside and outside ``roi_mask``), ``ssim_y``,
    ``ssim_y_roi`` and ``ssim_y_background`` (:func:`masked_psnr`, :func:`masked_ssim`), ``psnr_hvs`` and
    ``psnr_hvsm`` (:func:`psnr_hvs`), ``ms_ssim`` (:func:`ms_ssim`) and ``vifp`` (:func:`vifp`); on RGB:
    ``psnr_rgb``. A value is NaN when it is undefined: a region with no pixel (for SSIM: none inside the 5-pixel
    border), or MS-SSIM of an image smaller than 161 pixels per side.
    """
    reference, decoded = _check_pair(reference, decoded)
    roi = _check_mask(roi_mask, reference.shape, "roi_mask")
    nan = math.nan
    row = {
        "psnr_y": masked_psnr(reference, decoded),
        "psnr_y_roi": masked_psnr(reference, decoded, roi) if roi.any() else nan,
        "psnr_y_background": masked_psnr(reference, decoded, ~roi) if (~roi).any() else nan,
        "ssim_y": masked_ssim(reference, decoded),
        "ssim_y_roi": masked_ssim(reference, decoded, roi) if _inner(roi) else nan,
        "ssim_y_background": masked_ssim(reference, decoded, ~roi) if _inner(~roi) else nan,
        "psnr_rgb": masked_psnr(reference, decoded, space="rgb"),
    }
    row["psnr_hvs"], row["psnr_hvsm"] = psnr_hvs(reference, decoded)
    row["ms_ssim"] = ms_ssim(reference, decoded) if min(reference.shape[:2]) >= MS_SSIM_MIN_SIDE else nan
    row["vifp"] = vifp(reference, decoded)
    return {key: row[key] for key in QUALITY_KEYS}

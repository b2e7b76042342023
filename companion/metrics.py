"""Evaluation metrics: clean and robust accuracy, image quality (PSNR, SSIM), destruction rate."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._validate import check_choice, check_images, check_int, check_labels, check_positive
from .attacks import perturbation_sizes, run_attack

Model = Callable[[Tensor], Tensor]

__all__ = ["accuracy", "budgeted_accuracy", "destruction_rate", "predict", "psnr", "psnr_from_mse", "robust_accuracy", "ssim"]


def predict(model: Model, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Predicted classes ``argmax_k model(x)_k``, a ``(B,)`` int64 tensor (no grad, in batches)."""
    if not callable(model):
        raise TypeError(f"model must be a callable mapping images to logits, got {type(model).__name__}")
    check_images(x, "x")
    batch_size = check_int(batch_size, "batch_size")
    with torch.no_grad():
        return torch.cat([model(x[i: i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)])


def accuracy(model: Model, x: Tensor, y: Tensor, *, batch_size: int = 512) -> float:
    """Fraction in [0, 1] of images of ``x`` whose predicted class is ``y``."""
    y = check_labels(y, check_images(x, "x").shape[0], "y")
    return float((predict(model, x, batch_size=batch_size) == y.to(x.device)).double().mean())


def robust_accuracy(
    model: Model,
    x: Tensor,
    y: Tensor,
    attack: str,
    *,
    batch_size: int = 256,
    progress: bool = False,
    return_adv: bool = False,
    **params: object,
) -> float | tuple[float, Tensor]:
    """Accuracy on ``run_attack(attack, model, x, y, **params)``; with ``return_adv`` also the images.

    Example: ``robust_accuracy(model, x, y, "pgd", eps=0.3, steps=40)``.
    """
    x_adv = run_attack(attack, model, x, y, batch_size=batch_size, progress=progress, **params)
    acc = accuracy(model, x_adv, y, batch_size=batch_size)
    return (acc, x_adv) if return_adv else acc


def budgeted_accuracy(model: Model, x: Tensor, x_adv: Tensor, y: Tensor, budget: float, *, norm: str = "l2") -> float:
    """Robust accuracy at ``budget`` implied by a minimum-norm attack (C&W, DeepFool).

    An image counts as robust when it is still classified correctly on ``x_adv`` or when its
    adversarial example lies farther than ``budget`` from ``x`` (in ``norm``, "l2" or "linf").
    """
    y = check_labels(y, check_images(x, "x").shape[0], "y").to(x.device)
    check_images(x_adv, "x_adv")
    check_positive(budget, "budget", allow_zero=True)
    size = perturbation_sizes(x, x_adv, norm)
    robust = (predict(model, x_adv) == y) | (size > budget)
    return float(robust.double().mean())


# --------------------------------------------------------------------------- image quality
def _check_pair(x: Tensor, ref: Tensor, data_range: float, reduction: str) -> float:
    for name, t in (("x", x), ("ref", ref)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor of shape (B, C, H, W)")
        if t.ndim != 4 or t.numel() == 0:
            raise ValueError(f"{name} must be a non-empty batch of shape (B, C, H, W), got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    check_choice(reduction, "reduction", ("mean", "none"))
    return check_positive(data_range, "data_range")


def _reduce(per_image: Tensor, reduction: str) -> float | Tensor:
    return float(per_image.mean()) if reduction == "mean" else per_image


def psnr_from_mse(mse: Tensor, data_range: float) -> Tensor:
    """The PSNR formula ``10 log10(data_range² / mse)`` in dB, elementwise; ``mse = 0`` gives ``+inf``.

    The one PSNR of the companion: :func:`psnr` (whole images) and :func:`companion.ct.evaluate.masked_psnr`
    (outside the metal) differ only in the pixels their MSE averages over.
    """
    return 10 * torch.log10(data_range**2 / mse)


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0, *, reduction: str = "mean") -> float | Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` in dB, per image of ``(B, C, H, W)``.

    The MSE is over each image's ``C·H·W`` values (as ``skimage.metrics.peak_signal_noise_ratio``);
    ``reduction="mean"`` returns the batch mean as a float, ``"none"`` the ``(B,)`` float64 tensor.
    An identical pair (MSE = 0) has PSNR ``+inf``, so the mean is then ``inf`` as well.
    """
    data_range = _check_pair(x, ref, data_range, reduction)
    mse = (x.double() - ref.double()).pow(2).flatten(1).mean(dim=1)
    return _reduce(psnr_from_mse(mse, data_range), reduction)


def ssim(
    x: Tensor,
    ref: Tensor,
    data_range: float = 1.0,
    *,
    reduction: str = "mean",
    gaussian: bool = False,
    mask: Tensor | None = None,
) -> float | Tensor:
    """Structural similarity index per image of ``(B, C, H, W)``, in [-1, 1] (1 = identical).

    Wraps ``skimage.metrics.structural_similarity`` image by image, with its defaults (7×7 uniform
    window, sample covariance) and ``channel_axis=0`` when ``C > 1`` (mean SSIM over channels);
    images must be at least 7×7. Not differentiable. ``reduction`` as in :func:`psnr`.

    ``gaussian=True`` uses the window of Wang et al. (2004) instead: Gaussian weights with σ = 1.5
    truncated to 11×11 and population covariance (``gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False``); images must then be at least 11×11.

    ``mask``, a boolean ``(B, H, W)`` tensor, averages each image's SSIM map (``full=True``) over
    the pixels where it is true, over all channels, instead of over the whole image. Like the
    unmasked mean, it leaves out the border of half a window (3 pixels, 5 with ``gaussian``)
    whose local statistics lean on reflected pixels, so an all-true mask gives the unmasked value
    (up to the order of summation). A mask with no true pixel inside that border raises
    ``ValueError``.
    """
    from skimage.metrics import structural_similarity

    data_range = _check_pair(x, ref, data_range, reduction)
    if not isinstance(gaussian, bool):
        raise TypeError(f"gaussian must be True or False, got {type(gaussian).__name__}")
    window = 11 if gaussian else 7
    if gaussian and min(x.shape[-2:]) < window:
        raise ValueError(f"images must be at least 11x11 for the Gaussian SSIM window, got {tuple(x.shape[-2:])}")
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian else {}
    a, b = x.detach().cpu().double().numpy(), ref.detach().cpu().double().numpy()
    multichannel = a.shape[1] > 1
    if mask is None:
        values = [
            structural_similarity(
                ai if multichannel else ai[0], bi if multichannel else bi[0],
                data_range=data_range, channel_axis=0 if multichannel else None, **options,
            )
            for ai, bi in zip(a, b)
        ]
        return _reduce(torch.from_numpy(np.asarray(values, dtype=np.float64)), reduction)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean torch.Tensor of shape (B, H, W), got {type(mask).__name__}"
                        + (f" of dtype {mask.dtype}" if isinstance(mask, Tensor) else ""))
    expected = (x.shape[0], *x.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask must have shape (B, H, W) = {expected}, got {tuple(mask.shape)}")
    pad = window // 2
    inside = mask.detach().cpu().numpy().copy()
    inside[:, :pad] = inside[:, -pad:] = False
    inside[:, :, :pad] = inside[:, :, -pad:] = False
    if not inside.any(axis=(1, 2)).all():
        raise ValueError(f"mask selects no pixel at least {pad} pixels from the border in some image "
                         "(the SSIM map is averaged there only)")
    values = []
    for ai, bi, keep in zip(a, b, inside):
        _, full = structural_similarity(
            ai, bi, data_range=data_range, channel_axis=0, full=True, **options,
        )
        values.append(full[:, keep].mean(dtype=np.float64))
    return _reduce(torch.from_numpy(np.asarray(values, dtype=np.float64)), reduction)


# --------------------------------------------------------------------------- defenses
def destruction_rate(clean_correct: Tensor, adv_correct: Tensor, defended_correct: Tensor) -> float:
    """Share of the successful adversarial examples that a defense makes correct again.

    With boolean per-image tensors ``c`` (clean image correct), ``a`` (adversarial image correct,
    undefended) and ``d`` (adversarial image correct after the defense):
    ``Σ c·(1−a)·d / Σ c·(1−a)`` (Prakash et al. 2018). Raises ``ValueError`` if no image is
    clean-correct and fooled (the rate is then undefined).
    """
    tensors = {"clean_correct": clean_correct, "adv_correct": adv_correct, "defended_correct": defended_correct}
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or t.dtype != torch.bool:
            raise TypeError(f"{name} must be a boolean torch.Tensor (one entry per image), e.g. pred == y")
        if t.shape != clean_correct.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(clean_correct.shape)}")
    fooled = clean_correct & ~adv_correct
    n = int(fooled.sum())
    if n == 0:
        raise ValueError("destruction rate undefined: no image is both correct when clean and fooled by the attack")
    return int((fooled & defended_correct).sum()) / n

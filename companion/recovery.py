"""Blind image recovery with a frozen GAN prior and a corruption-mimicking surrogate: MimicGAN.

Anirudh, Thiagarajan, Kailkhura & Bremer (IJCV 2020, arXiv 1912.07748). ``N`` observations
``y_j = f(x_j) + η`` of an **unknown** corruption ``f`` are explained by clean images ``G(z_j)`` of a
frozen generator seen through a shallow surrogate ``f̂_Θ`` fitted at test time (eq. 2-3):

``min_{Θ, z_1..z_N}  Σ_j ‖y_j − f̂_Θ(G(z_j))‖₁ + λ_adv Σ_j log(1 − D(G(z_j)))
+ λ_I Σ_j (‖y_j − G(z_j)‖₁ + ‖f̂_Θ(G(z_j)) − G(z_j)‖₁)``,

solved by Algorithm 1 (:func:`mimic_project`): ``T`` outer iterations of ``T1`` RMSProp steps on Θ
followed by ``T2`` RMSProp steps on all codes. The same loop gives the two reference points:
``surrogate="identity"`` (``f̂ = 𝕀``: *plain projection*, the paper's "PGD" and Defense-GAN special case)
and a fixed callable ``f`` (the known corruption, e.g. :func:`oracle`: the upper bound).

**Conventions.** The paper works on images in [−1, 1]; the book's images and ``G``'s outputs are in
[0, 1]. Every corruption is written in the paper's convention on ``u = 2x − 1`` (its appendix code,
line by line) and mapped back by ``(u + 1)/2``: so the negative is ``1 − blur(x)``, "multiply by
0.5·randn" multiplies ``2x − 1``, and a noise of standard deviation σ on [−1, 1] has σ/2 on [0, 1].
The surrogate, too, acts on ``u`` (:class:`Surrogate`), and the ℓ1 terms of the loss are measured in
the paper's units (``‖u − v‖₁ = 2‖x − y‖₁``), so that Table 1's λ keep their meaning next to the
log term. Observations may leave [0, 1] (noise); they are checked to be finite float batches.

**Corruptions** (:data:`CORRUPTIONS`, each ``(x, generator) -> y`` for ``x`` ``(B, C, H, W)`` in [0, 1]):
the appendix geometry is for 64×64 images and is scaled by ``s = W/64`` (rows by ``H/64``), rounding
half up: on MNIST ``s = 28/64``. Gaussian blurs use OpenCV's σ for the code's kernel size
(``0.3((k − 1)/2 − 1) + 0.8``: 2.6 for k = 15, 4.1 for k = 25) times ``s``, with a kernel radius
``round(s (k − 1)/2)`` and OpenCV's reflect-101 border. Where the paper's text and code differ, the
code is the default and the text's value is a keyword. Stylize (OpenCV's ``cv2.stylization``) is left
out: OpenCV is not a dependency of the companion. :func:`oracle` gives the noise-free, differentiable
version of a corruption (the known ``f``).
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_choice, check_generator, check_images, check_int, check_positive
from .metrics import psnr
from .train import Step, frozen, module_device, train_loop

__all__ = ["CORRUPTIONS", "PAPER_SETTINGS", "MimicGANDefense", "Recovery", "Surrogate", "binary", "corrupt",
           "drop_pixels", "gray_blur", "inpainting", "mimic_loss", "mimic_project", "mimic_step", "negative", "occlusion",
           "oracle", "stuck_pixels"]

PAPER_SIZE = 64   # the appendix code's image size; its geometry is scaled by size / 64


# --------------------------------------------------------------------------- helpers
def _check_observations(y: Any, name: str = "y_obs") -> Tensor:
    """A non-empty float batch ``(B, C, H, W)`` of finite values (any range: observations may leave [0, 1])."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {y.dtype}")
    if y.ndim != 4 or y.numel() == 0:
        raise ValueError(f"{name} must be a non-empty batch of shape (B, C, H, W), got shape {tuple(y.shape)}")
    if not torch.isfinite(y.detach()).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return y


def _scaled(v: float, n: int) -> int:
    """The appendix's 64-pixel coordinate ``v`` on an axis of ``n`` pixels, rounded half up."""
    return int(math.floor(v * n / PAPER_SIZE + 0.5))


def _to_paper(x: Tensor) -> Tensor:
    """A batch in [0, 1] (checked) in the paper's convention: ``u = 2x − 1``."""
    return 2 * check_images(x, "x") - 1


def _from_paper(u: Tensor) -> Tensor:
    """Back from the paper's [−1, 1] convention: ``(u + 1)/2``."""
    return (u + 1) / 2


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor, who: str) -> Tensor:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{who} draws noise and needs a torch.Generator (the global random state is never used), "
                        f"got {type(generator).__name__}")
    return torch.randn(shape, generator=generator, device=generator.device).to(like)


def _opencv_sigma(kernel: int) -> float:
    """OpenCV's Gaussian σ for a kernel of size ``kernel`` when σ is given as 0."""
    return 0.3 * ((kernel - 1) / 2 - 1) + 0.8


def _blur(u: Tensor, kernel: int) -> Tensor:
    """OpenCV's ``GaussianBlur(u, (k, k), 0)`` at the scale of ``u`` (σ and radius times size/64), reflect-101 border."""
    out = u
    for axis in (2, 3):   # separable: rows, then columns
        n = u.shape[axis]
        sigma = _opencv_sigma(kernel) * n / PAPER_SIZE
        radius = max(_scaled((kernel - 1) / 2, n), 1)
        if radius >= n:
            raise ValueError(f"images of {n} pixels are too small for a blur of radius {radius}")
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        w = torch.exp(-t**2 / (2 * sigma**2))
        w = (w / w.sum()).to(u)
        c = u.shape[1]
        if axis == 2:
            out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), w.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                           groups=c)
        else:
            out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), w.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                           groups=c)
    return out


# --------------------------------------------------------------------------- corruptions (the appendix code, on u = 2x - 1)
def gray_blur(x: Tensor, generator: torch.Generator | None = None, *, kernel: int = 15, truncate: int = 120) -> Tensor:
    """Gray Blur: ``GaussianBlur(k = 15)``, then the code's brightness truncation at ``truncate``/255.

    The code maps the blur to 8 bits, ``127.5(u + 1)``, truncates above 120 and maps back; on [0, 1]
    that is ``min(blur(x), 120/255)``. The 8-bit floor of the code (< 1/255) is left out, so that the
    corruption is exactly its own differentiable :func:`oracle`. The text says "scale 25" and a gray
    conversion; the code uses k = 15 and no conversion (the book's images are gray anyway).
    """
    u = _to_paper(x)
    return _from_paper(torch.clamp(_blur(u, kernel), max=truncate / 127.5 - 1))


def negative(x: Tensor, generator: torch.Generator | None = None, *, kernel: int = 25) -> Tensor:
    """Negative: ``GaussianBlur(k = 25)`` then negate, ``−blur(u)``; on [0, 1]: ``1 − blur(x)``.

    The code's default kernel is 25 (σ ≈ 4.1 at 64 px); the text says "scale 11" (``kernel=11``).
    It is also the robust-classification corruption "Blur + Negative" (scale 25): ``blur_negative``.
    """
    u = _to_paper(x)
    return _from_paper(-_blur(u, kernel))


def stuck_pixels(x: Tensor, generator: torch.Generator | None = None, *, column: int = 26, sigma: float = 0.25) -> Tensor:
    """Stuck Pixels (the code's ``pixel_error``): column ``c = round(26 s)`` is copied into every column
    left of it, plus ``sigma·n`` on [−1, 1] (σ/2 on [0, 1]), **the same noise** ``n`` for every image.

    The text says σ = 0.5; the code uses 0.25.
    """
    u = _to_paper(x)
    c = _scaled(column, u.shape[3])
    noise = _randn((1, u.shape[1], u.shape[2], c), generator, u, "stuck_pixels") if sigma else 0.0
    stuck = u[..., c: c + 1].expand(-1, -1, -1, c) + sigma * noise
    return _from_paper(torch.cat([stuck, u[..., c:]], dim=3))


def _occlusion_mask(like: Tensor) -> Tensor:
    """0 on the code's cross, rows 24:44 × cols 12:54 and its transpose (scaled), 1 elsewhere: ``(1, 1, H, W)``."""
    h, w = like.shape[2:]
    mask = torch.ones(1, 1, h, w, dtype=like.dtype, device=like.device)
    mask[..., _scaled(24, h):_scaled(44, h), _scaled(12, w):_scaled(54, w)] = 0
    mask[..., _scaled(12, h):_scaled(54, h), _scaled(24, w):_scaled(44, w)] = 0
    return mask


def occlusion(x: Tensor, generator: torch.Generator | None = None, *, sigma: float = 0.5) -> Tensor:
    """Occlusion: a cross of noise bars (rows 24:44 × cols 12:54 and its transpose, scaled) filled with
    ``sigma·n`` on [−1, 1], fresh noise per image; on [0, 1] the bars hold ``0.5 + (σ/2) n``.

    The code also replaces clean pixels that are exactly 0 on [−1, 1] (0.5 on [0, 1]) by noise, a side
    effect left out here (no 8-bit image has a pixel equal to 0.5).
    """
    u = _to_paper(x)
    mask = _occlusion_mask(u)
    noise = _randn(tuple(u.shape), generator, u, "occlusion") if sigma else 0.0
    return _from_paper(u * mask + (1 - mask) * sigma * noise)


def _inpainting_bands(like: Tensor) -> Tensor:
    """1 on the code's 8 horizontal bands (rows 8k+4 : 8k+8, cols 12:54, scaled), 0 elsewhere: ``(1, 1, H, W)``."""
    h, w = like.shape[2:]
    bands = torch.zeros(1, 1, h, w, dtype=like.dtype, device=like.device)
    for k in range(PAPER_SIZE // 8):
        bands[..., _scaled(8 * k + 4, h):_scaled(8 * k + 8, h), _scaled(12, w):_scaled(54, w)] = 1
    return bands


def inpainting(x: Tensor, generator: torch.Generator | None = None, *, sigma: float = 0.5) -> Tensor:
    """Inpainting: the pixels of 8 horizontal bands (4 px wide, period 8, cols 12:54 at 64 px; scaled)
    are **multiplied** by ``sigma·n`` on [−1, 1] (the text says "overlay"; the code multiplies).

    One mask per call, shared by the whole batch, as in the code. On [0, 1] a band pixel becomes
    ``0.5 + (2x − 1)(σ/2) n``.
    """
    u = _to_paper(x)
    bands = _inpainting_bands(u)
    noise = _randn((1, *u.shape[1:]), generator, u, "inpainting") if sigma else 0.0
    return _from_paper(u * (1 - bands + bands * sigma * noise))


def binary(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary (robust classification): 1 where a pixel exceeds its image's median (the 50th percentile),
    else −1 on [−1, 1] (0 on [0, 1]). On MNIST the median is the black background, so the result is
    the support of the digit."""
    u = _to_paper(x)
    med = u.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    return _from_paper(torch.where(u > med, 1.0, -1.0).to(u))


def drop_pixels(x: Tensor, generator: torch.Generator | None = None, *, rate: float = 0.7) -> Tensor:
    """Drop Pixels (robust classification): ``round(rate·H·W)`` pixels per image, drawn at random (all
    channels of a pixel together), are set to 0 **on [−1, 1]**, that is to 0.5 on [0, 1].

    The paper's images are in [−1, 1], so its "set to 0" is mid-gray; 0 on [0, 1] would be invisible on
    MNIST's black background. Each image gets its own mask.
    """
    u = _to_paper(x)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    b, _, h, w = u.shape
    scores = _randn((b, h * w), generator, u, "drop_pixels")
    drop = scores.argsort(dim=1)[:, : round(rate * h * w)]
    keep = torch.ones(b, h * w, dtype=u.dtype, device=u.device).scatter_(1, drop, 0.0)
    return _from_paper(u * keep.view(b, 1, h, w))


CORRUPTIONS: dict[str, Callable[..., Tensor]] = {
    "gray_blur": gray_blur, "negative": negative, "stuck_pixels": stuck_pixels, "occlusion": occlusion,
    "inpainting": inpainting, "binary": binary, "drop_pixels": drop_pixels, "blur_negative": negative,
}
"""The corruptions by name, ``(x, generator) -> y``: the six blind-recovery tasks but Stylize, and the three
robust-classification ones (``blur_negative`` is ``negative``: both blur with k = 25 in the code)."""

_NOISE_FREE = {"gray_blur": {}, "negative": {}, "blur_negative": {}, "stuck_pixels": {"sigma": 0.0},
               "occlusion": {"sigma": 0.0}, "inpainting": {"sigma": 0.0}}


def corrupt(name: str, x: Tensor, generator: torch.Generator | None = None, **params: Any) -> Tensor:
    """``CORRUPTIONS[name](x, generator, **params)``, with a clear error for an unknown name."""
    check_choice(name, "corruption", CORRUPTIONS)
    return CORRUPTIONS[name](x, generator, **params)


def oracle(name: str, seed: int | None = None) -> Callable[[Tensor], Tensor]:
    """The known corruption ``f`` of ``name`` as a differentiable map ``x -> f(x)``, for the oracle bound.

    Blurs are convolutions and the truncation a clamp (``gray_blur``, ``negative`` and ``blur_negative``
    are their own oracles). With ``seed=None`` the masks of ``stuck_pixels``, ``occlusion`` and
    ``inpainting`` are known and their noise is set to its mean, 0 (occluded pixels and inpainting bands
    are then 0.5 on [0, 1] and carry no information). With a ``seed``, ``f`` is the realised corruption
    ``corrupt(name, x, torch.Generator().manual_seed(seed))``, noise included: for the masks shared by the
    batch (inpainting, stuck pixels) that is the exact forward model of observations made with that seed,
    which a surrogate can learn as well (the noise-free oracle is then no upper bound). ``binary`` (a
    threshold: zero gradient almost everywhere) and ``drop_pixels`` (a random mask per image) have none.
    """
    check_choice(name, "corruption", CORRUPTIONS)
    if name not in _NOISE_FREE:
        raise ValueError(f"corruption {name!r} has no oracle: "
                         + ("a threshold has zero gradient almost everywhere" if name == "binary"
                            else "its random mask differs per image and is not known"))
    if seed is None:
        return functools.partial(CORRUPTIONS[name], generator=None, **_NOISE_FREE[name])
    seed = check_int(seed, "seed", minimum=0)

    def realised(x: Tensor) -> Tensor:
        return CORRUPTIONS[name](x, torch.Generator().manual_seed(seed))

    return realised


# --------------------------------------------------------------------------- the surrogate
class Surrogate(nn.Module):
    """The paper's 28×28 surrogate (Table 5): ``f̂_Θ(x) = M ⊙ act(conv₂(relu(conv₁(u)))) + W ⊙ u`` on ``u = 2x − 1``.

    ``conv₁``: 5×5, ``C → 16``; ``conv₂``: 5×5, ``16 → C`` ("same" padding, with biases); ``act`` is ReLU,
    or tanh for Occlusion and Inpainting (the paper's choice); ``M`` and ``W`` are learned per-pixel maps
    ``(C, H, W)``. The output is mapped back to [0, 1] by ``(v + 1)/2``, like the corruptions. Every
    parameter starts at ``N(0, init_std²)`` drawn from ``generator`` (``init="random"``, Algorithm 1's random
    initialisation: the untrained surrogate outputs about 0.5 everywhere); ``init="identity"`` then sets
    ``W = 1``, so that ``f̂`` starts near the identity (a warm start for corruptions that keep part of the image).
    """

    def __init__(self, *, generator: torch.Generator, size: int | tuple[int, int] = 28, channels: int = 1,
                 hidden: int = 16, kernel: int = 5, activation: str = "relu", init_std: float = 0.02,
                 init: str = "random") -> None:
        super().__init__()
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator (the global random state is never used), "
                            f"got {type(generator).__name__}")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        for name, v in (("size", h), ("size", w), ("channels", channels), ("hidden", hidden), ("kernel", kernel)):
            check_int(v, name)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (for 'same' padding), got {kernel}")
        self.activation = check_choice(activation, "activation", ("relu", "tanh"))
        init_std = check_positive(init_std, "init_std", allow_zero=True)
        check_choice(init, "init", ("random", "identity"))
        self.conv1 = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(hidden, channels, kernel, padding=kernel // 2)
        self.mask = nn.Parameter(torch.empty(channels, h, w))
        self.weight = nn.Parameter(torch.empty(channels, h, w))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * init_std)
            if init == "identity":
                self.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.mask.shape):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            expected = ", ".join(map(str, self.mask.shape))
            raise ValueError(f"Surrogate expects images of shape (B, {expected}), got {shape}")
        u = 2 * x - 1
        h = self.conv2(torch.relu(self.conv1(u)))
        h = torch.tanh(h) if self.activation == "tanh" else torch.relu(h)
        return (self.mask * h + self.weight * u + 1) / 2


# --------------------------------------------------------------------------- Algorithm 1
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "gray_blur": dict(lam_identity=0.0, lam_adv=0.0, lr_surrogate=2e-4, lr_latent=1e-3, activation="relu"),
    "stylize": dict(lam_identity=0.0, lam_adv=0.0, lr_surrogate=8e-5, lr_latent=4e-4, activation="relu"),
    "negative": dict(lam_identity=0.0, lam_adv=1e-4, lr_surrogate=1e-3, lr_latent=1e-3, activation="relu"),
    "stuck_pixels": dict(lam_identity=0.1, lam_adv=1e-4, lr_surrogate=4e-3, lr_latent=3e-3, activation="relu"),
    "occlusion": dict(lam_identity=0.1, lam_adv=1e-4, lr_surrogate=4e-3, lr_latent=3e-3, activation="tanh"),
    "inpainting": dict(lam_identity=0.1, lam_adv=1e-4, lr_surrogate=4e-3, lr_latent=3e-3, activation="tanh"),
}
"""Table 1 of the paper (CelebA, blind recovery) as keywords of :func:`mimic_project`: ``λ_I``, ``λ_adv``,
``γ_s``, ``γ_g``, and the surrogate's last activation (tanh for Occlusion and Inpainting, as the text says).
Stylize's row is kept for completeness; its corruption (OpenCV's stylization) is not implemented."""


@dataclass(frozen=True)
class Recovery:
    """What :func:`mimic_project` returns.

    ``images``: ``G(ẑ)`` ``(N, C, H, W)`` in [0, 1]; ``z``: the codes ``(N, d)``; ``surrogate``: the fitted
    :class:`Surrogate`, ``nn.Identity()`` for plain projection, or the fixed ``f``; ``history``: per outer
    iteration, with index 0 the start (``T + 1`` values): ``loss`` (eq. 3), ``surrogate_loss`` (mean over
    images of ``‖y_j − f̂(G(z_j))‖₁`` in the paper's [−1, 1] units) and, when ``clean`` was given, ``psnr``
    (mean PSNR of ``G(z)`` to the clean images, dB, peak 1); ``surrogate_steps`` and ``latent_steps``:
    the updates taken; ``seconds``: wall time.
    """

    images: Tensor = field(repr=False)
    z: Tensor = field(repr=False)
    surrogate: Callable[[Tensor], Tensor]
    history: dict[str, list[float]] = field(repr=False)
    surrogate_steps: int
    latent_steps: int
    seconds: float

    def mimicked(self) -> Tensor:
        """``f̂(G(ẑ))``: the surrogate's imitation of the observations (no gradient)."""
        with torch.no_grad():
            return self.surrogate(self.images)


def mimic_loss(y: Tensor, x: Tensor, f: Callable[[Tensor], Tensor], D: nn.Module | None, *, lam_identity: float,
               lam_adv: float) -> dict[str, Tensor]:
    """The terms of eq. (3) for observations ``y`` and images ``x = G(z)``, summed over the images.

    ``obs = Σ_j ‖y_j − f(x_j)‖₁``, ``identity = Σ_j (‖y_j − x_j‖₁ + ‖f(x_j) − x_j‖₁)`` (ℓ1 in the paper's
    [−1, 1] units, twice the [0, 1] values), ``adv = Σ_j log(1 − D(x_j)) = Σ_j log σ(−ℓ_j)`` from
    ``D``'s logits ``ℓ_j`` (skipped when ``λ_adv = 0``), and ``total = obs + λ_adv adv + λ_I identity``.
    """
    y_est = f(x)
    obs = 2 * (y - y_est).abs().sum()
    total = obs
    out = {"obs": obs}
    if lam_identity:
        out["identity"] = 2 * ((y - x).abs().sum() + (y_est - x).abs().sum())
        total = total + lam_identity * out["identity"]
    if lam_adv:
        out["adv"] = F.logsigmoid(-D(x)).sum()   # type: ignore[misc]
        total = total + lam_adv * out["adv"]
    out["total"] = total
    return out


def _rmsprop(params: list[Tensor], lr: float) -> torch.optim.RMSprop:
    """RMSProp with TensorFlow's decay ρ = 0.9 (the paper's framework; torch's default is 0.99)."""
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9)


def mimic_step(G: nn.Module, D: nn.Module | None, y: Tensor, z: Tensor, f: Callable[[Tensor], Tensor],
               opt_z: torch.optim.Optimizer, opt_s: torch.optim.Optimizer | None, *, surrogate_steps: int,
               latent_steps: int, lam_identity: float, lam_adv: float, z_box: float | None,
               clean: Tensor | None = None) -> Step:
    """One update of Algorithm 1, for :func:`~companion.train.train_loop`: the ``k``-th call takes
    the ``k mod (T1 + T2)``-th step of an outer iteration.

    Algorithm 1's nested loops (``T`` outer iterations of ``T1`` surrogate and ``T2`` latent steps) are
    one sequence of ``T (T1 + T2)`` updates, so the book's one training loop runs them (progress bar, log,
    wall time) with this step and a counter; no second loop is needed.

    The first ``T1`` steps of each outer iteration update the surrogate's parameters Θ (``opt_s``) on
    eq. (3) at fixed codes (``G(z)`` is computed once per block); the next ``T2`` update all codes ``z``
    (``opt_z``) through ``G`` and ``f``, then clip them to ``[−z_box, z_box]`` when ``z_box`` is set.
    Gradients are taken with ``torch.autograd.grad`` for the updated tensors only, so nothing else
    accumulates a ``.grad``. Each step logs ``loss``; the last step of an outer iteration also logs
    ``outer_loss``, ``surrogate_loss`` and (with ``clean``) ``psnr`` at the new codes.
    """
    t1 = surrogate_steps if opt_s is not None else 0
    cycle = t1 + latent_steps
    params = [p for group in opt_s.param_groups for p in group["params"]] if opt_s is not None else []
    k, x_fixed = 0, None
    lams = dict(lam_identity=lam_identity, lam_adv=lam_adv)

    def step(_: Tensor | None) -> dict[str, float]:
        nonlocal k, x_fixed
        phase = k % cycle
        with torch.enable_grad():
            if phase < t1:                                  # surrogate update, z fixed
                if phase == 0:
                    with torch.no_grad():
                        x_fixed = G(z)
                loss = mimic_loss(y, x_fixed, f, D, **lams)["total"]
                grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads):
                    p.grad = g
                opt_s.step()                                # type: ignore[union-attr]
            else:                                           # inversion update, Θ fixed
                loss = mimic_loss(y, G(z), f, D, **lams)["total"]
                (z.grad,) = torch.autograd.grad(loss, z)
                opt_z.step()
                if z_box is not None:
                    with torch.no_grad():
                        z.clamp_(-z_box, z_box)
        k += 1
        logged = {"loss": loss.item()}
        if k % cycle == 0:
            logged.update(_outer_metrics(G, D, y, z, f, clean, **lams))
        return logged

    return step


def _outer_metrics(G: nn.Module, D: nn.Module | None, y: Tensor, z: Tensor, f: Callable[[Tensor], Tensor],
                   clean: Tensor | None, **lams: float) -> dict[str, float]:
    """``outer_loss`` (eq. 3), ``surrogate_loss`` (mean ``‖y_j − f(G(z_j))‖₁``, paper units) and ``psnr`` at ``z``."""
    with torch.no_grad():
        x = G(z)
        terms = mimic_loss(y, x, f, D, **lams)
        out = {"outer_loss": float(terms["total"]), "surrogate_loss": float(terms["obs"]) / len(y)}
        if clean is not None:
            out["psnr"] = psnr(x, clean)
    return out


def _check_settings(outer: Any, surrogate_steps: Any, latent_steps: Any, lam_identity: Any, lam_adv: Any,
                    lr_surrogate: Any, lr_latent: Any, z_box: Any, init_draws: Any, activation: Any,
                    init_std: Any) -> None:
    check_int(outer, "outer")
    check_int(surrogate_steps, "surrogate_steps", minimum=0)
    check_int(latent_steps, "latent_steps")
    check_positive(lam_identity, "lam_identity", allow_zero=True)
    check_positive(lam_adv, "lam_adv", allow_zero=True)
    check_positive(lr_surrogate, "lr_surrogate")
    check_positive(lr_latent, "lr_latent")
    if z_box is not None:
        check_positive(z_box, "z_box")
    check_int(init_draws, "init_draws")
    check_choice(activation, "activation", ("relu", "tanh"))
    check_positive(init_std, "init_std", allow_zero=True)


def mimic_project(
    G: nn.Module,
    D: nn.Module | None,
    y_obs: Tensor,
    *,
    surrogate: str | Callable[[Tensor], Tensor] = "mimic",
    outer: int = 30,
    surrogate_steps: int = 20,
    latent_steps: int = 30,
    lam_identity: float = 0.0,
    lam_adv: float = 0.0,
    lr_surrogate: float = 1e-3,
    lr_latent: float = 1e-3,
    z_box: float | None = None,
    activation: str = "relu",
    init_std: float = 0.02,
    init_draws: int = 1000,
    generator: torch.Generator,
    clean: Tensor | None = None,
    progress: bool = False,
) -> Recovery:
    """Algorithm 1 of MimicGAN: recover ``x_j = G(ẑ_j)`` from observations ``y_obs`` of an unknown corruption.

    Minimises eq. (3) (:func:`mimic_loss`) by alternating, for ``T = outer`` iterations, ``T1 =
    surrogate_steps`` RMSProp steps (rate ``γ_s = lr_surrogate``) on the surrogate's parameters Θ and
    ``T2 = latent_steps`` RMSProp steps (``γ_g = lr_latent``) on all codes, each followed by a clip to
    ``[−z_box, z_box]`` when ``z_box`` is set (:func:`mimic_step` in :func:`~companion.train.train_loop`).
    All codes start at the mean of ``init_draws`` draws of ``G``'s prior ``N(0, I)`` (the paper's mean
    start, the same for every image; about 0), drawn from ``generator`` before the surrogate's
    initialisation. The default schedule ``T, T1, T2 = 30, 20, 30`` with Table 1's rates
    (:data:`PAPER_SETTINGS`; the paper gives no schedule) is what recovered the shipped MNIST GAN's
    images reliably in the pilot; much shorter schedules need larger rates and then depend on the seed.

    ``surrogate`` chooses ``f̂``, through the same loop:

    * ``"mimic"``: a fresh :class:`Surrogate` (``activation``, parameters ``N(0, init_std²)``), fitted;
    * a :class:`Surrogate` instance: a copy of it is fitted (a warm start; the argument is not changed;
      wrap it, ``lambda x: s(x)``, to use it as a fixed ``f``);
    * ``"identity"``: ``f̂ = 𝕀``, no Θ step: plain projection (with ``lam_identity = 0``, the paper's "PGD"
      special case; any ``λ_I`` only rescales the ℓ1 term);
    * any other callable ``f``: a fixed, known corruption (e.g. :func:`oracle`), no Θ step: the oracle.

    ``z_box=None`` (the default) does not clip: the paper clips to its ``U(−1, 1)`` prior's box
    ``[−1, 1]``, which would cut a Gaussian prior's typical codes; a box of 3 is the Gaussian analogue.
    ``G`` (and ``D``, needed only when ``lam_adv > 0``) must be in eval mode; they are frozen during the
    run and their ``requires_grad`` flags restored afterwards. With ``clean`` images the history records
    the PSNR of ``G(z)`` after every outer iteration. The loss sums over images, and each code enters
    only its own terms, so the codes' updates do not depend on the batch, but Θ is shared by all of it.
    """
    d = check_generator(G)
    y = _check_observations(y_obs, "y_obs")
    _check_settings(outer, surrogate_steps, latent_steps, lam_identity, lam_adv, lr_surrogate, lr_latent, z_box,
                    init_draws, activation, init_std)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (the global random state is never used), "
                        f"got {type(generator).__name__}")
    if lam_adv > 0:
        if not isinstance(D, nn.Module):
            raise TypeError(f"lam_adv > 0 needs the discriminator D (a module returning logits), got {type(D).__name__}")
        if D.training:
            raise ValueError("D is in training mode: call D.eval() first (BatchNorm must use its running statistics)")
    dev = module_device(G)
    y = y.detach().to(dev)
    if clean is not None:
        check_images(clean, "clean")
        if clean.shape != y.shape:
            raise ValueError(f"clean must have the shape of y_obs {tuple(y.shape)}, got {tuple(clean.shape)}")
        clean = clean.detach().to(dev)

    z0 = torch.randn(init_draws, d, generator=generator).mean(0)
    z = z0.to(dev).expand(len(y), d).clone().requires_grad_(True)
    with torch.no_grad():
        shape = tuple(G(z[:1]).shape[1:])
    if tuple(y.shape[1:]) != shape:
        raise ValueError(f"y_obs must have G's image shape (B, {', '.join(map(str, shape))}), got {tuple(y.shape)}")

    trained: Surrogate | None = None
    if isinstance(surrogate, str):
        check_choice(surrogate, "surrogate", ("mimic", "identity"))
        if surrogate == "mimic":
            trained = Surrogate(generator=generator, size=shape[1:], channels=shape[0], activation=activation,
                                init_std=init_std).to(dev)
            f: Callable[[Tensor], Tensor] = trained
        else:
            f = nn.Identity()
    elif isinstance(surrogate, Surrogate):
        trained = f = _copy_surrogate(surrogate).to(dev)
    elif callable(surrogate):
        f = surrogate
    else:
        raise TypeError(f"surrogate must be 'mimic', 'identity', a Surrogate or a callable f, "
                        f"got {type(surrogate).__name__}")

    opt_s = _rmsprop(list(trained.parameters()), lr_surrogate) if trained is not None else None
    opt_z = _rmsprop([z], lr_latent)
    t1 = surrogate_steps if trained is not None else 0
    lams = dict(lam_identity=float(lam_identity), lam_adv=float(lam_adv))
    fixed = [m for m in (G, D, f) if isinstance(m, nn.Module) and m is not trained]
    desc = ("MimicGAN" if trained is not None
            else "plain projection" if isinstance(f, nn.Identity) else "known-f projection")
    start = time.perf_counter()
    with frozen(*fixed):
        first = _outer_metrics(G, D, y, z, f, clean, **lams)
        step = mimic_step(G, D, y, z, f, opt_z, opt_s, surrogate_steps=t1, latent_steps=latent_steps, z_box=z_box,
                          clean=clean, **lams)
        hist = train_loop(step, [trained] if trained is not None else [], steps=outer * (t1 + latent_steps),
                          desc=desc, progress=progress)
        with torch.no_grad():
            images = G(z)
    history = {"loss": [first["outer_loss"]] + hist.steps["outer_loss"],
               "surrogate_loss": [first["surrogate_loss"]] + hist.steps["surrogate_loss"]}
    if clean is not None:
        history["psnr"] = [first["psnr"]] + hist.steps["psnr"]
    return Recovery(images=images.detach(), z=z.detach(), surrogate=f, history=history,
                    surrogate_steps=outer * t1, latent_steps=outer * latent_steps,
                    seconds=time.perf_counter() - start)


def _copy_surrogate(s: Surrogate) -> Surrogate:
    """A parameter copy of ``s`` (a warm start that leaves the caller's module unchanged)."""
    out = copy.deepcopy(s)
    out.requires_grad_(True)
    return out


# --------------------------------------------------------------------------- the defense
_SETTINGS = [n for n, p in inspect.signature(mimic_project).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("generator", "clean", "progress")]
_DEFAULTS = {n: p.default for n, p in inspect.signature(mimic_project).parameters.items() if n in _SETTINGS}


class MimicGANDefense(nn.Module):
    """MimicGAN as an input transform ``x -> G(ẑ)`` for :class:`~companion.defenses.Preprocessed`.

    Each call runs :func:`mimic_project` on **the whole batch it receives**, with a fresh surrogate seeded by
    ``seed`` (so a given batch is always cleaned the same way). The defense is therefore batch-dependent:
    the surrogate learns the batch's average corruption, and an image's output depends on the other
    images of its batch (the paper uses batches of 100 images from one attack). ``settings`` are
    :func:`mimic_project`'s keywords (``surrogate="identity"`` gives the paper's Defense-GAN special case).

    ``randomness``: a torch generator from which each call draws a fresh seed instead (the surrogate's
    initialisation changes from call to call): a randomised defense, the one an EOT attacker averages over.
    """

    def __init__(self, G: nn.Module, D: nn.Module | None, *, seed: int = 0,
                 randomness: torch.Generator | None = None, **settings: Any) -> None:
        super().__init__()
        check_generator(G)
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(_SETTINGS)}")
        full = {**_DEFAULTS, **settings}
        _check_settings(**{n: full[n] for n in ("outer", "surrogate_steps", "latent_steps", "lam_identity", "lam_adv",
                                                 "lr_surrogate", "lr_latent", "z_box", "init_draws", "activation",
                                                 "init_std")})
        self.G, self.D = G, D
        self.seed = check_int(seed, "seed", minimum=0)
        if randomness is not None and not isinstance(randomness, torch.Generator):
            raise TypeError(f"randomness must be a torch.Generator or None, got {type(randomness).__name__}")
        self.randomness = randomness
        self.settings: dict[str, Any] = dict(settings)

    @property
    def name(self) -> str:
        kind = self.settings.get("surrogate", "mimic")
        label = {"mimic": "MimicGAN", "identity": "plain projection"}.get(kind, "MimicGAN") if isinstance(kind, str) \
            else "known-f projection"
        s = {**_DEFAULTS, **self.settings}
        return f"{label} (T={s['outer']}, T1={s['surrogate_steps']}, T2={s['latent_steps']})"

    def recover(self, x: Tensor, progress: bool = False) -> Recovery:
        """The full :class:`Recovery` of the batch ``x`` (images in [0, 1])."""
        check_images(x, "x")
        seed = self.seed if self.randomness is None else \
            int(torch.randint(2**31 - 1, (1,), generator=self.randomness))
        return mimic_project(self.G, self.D, x, generator=torch.Generator().manual_seed(seed), progress=progress,
                             **self.settings)

    def forward(self, x: Tensor) -> Tensor:
        return self.recover(x).images

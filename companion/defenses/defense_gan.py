"""Projection onto a GAN's range as a defense: Defense-GAN and InvGAN ("Invert and Defend").

* :func:`project` solves ``min_z ‖G(z) − x‖²₂`` from ``R`` starting codes with ``T`` optimiser steps,
  all ``R × B`` codes in one batch, and keeps per image the restart with the smallest residual
  (Samangouei et al. 2018; the source's eq. 5.5). Defense-GAN starts from ``z ~ N(0, I)``.
* :func:`train_inverter` trains an inverter ``I: image -> latent`` **without data**, from codes
  ``z ~ N(0, I)`` only: ``λ1 L_adv + λ2 L_semantic + λ3 L_latent`` (eqs. 5.9-5.11; λ2 = 100, λ1 = λ3 = 1).
* :func:`encoder_start` is InvGAN's start (Algorithm 5.1): ``z_0 = I(x) + τ``, ``τ ~ N(0, σ²I)``
  (``τ = 0`` for the first restart).
* :class:`GANProjection` packages either projection as a transform ``x -> x_proj`` for
  :class:`~companion.defenses.Preprocessed` and :func:`~companion.attacks.bpda`.
* :func:`detection_scores` gives the image distance ``‖x − x_proj‖₂`` and the semantic distance
  ``A(x) = ‖Φ(x) − Φ(x_proj)‖₂`` (eq. 5.12), :func:`detection_auc` their ROC AUC.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._validate import check_choice, check_images, check_int, check_positive
from .._validate import check_generator as _check_generator
from ..train import History, Step, frozen, module_device, train_loop

__all__ = ["GANProjection", "Projection", "detection_auc", "detection_scores", "encoder_start",
           "inverter_losses", "inverter_step", "latent_recovery_error", "per_image_normal", "project", "train_inverter"]


@dataclass
class Projection:
    """Result of :func:`project`: ``x_proj = G(z)`` ``(B, C, H, W)``, the codes ``z`` ``(B, d)`` and the
    squared residuals ``‖G(z) − x‖²₂`` ``(B,)`` of the chosen restart."""

    x_proj: Tensor
    z: Tensor
    residual: Tensor


def project(
    G: nn.Module,
    x: Tensor,
    *,
    restarts: int = 1,
    steps: int = 100,
    lr: float = 0.05,
    optimizer: str = "adam",
    z0: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Projection:
    """Project images ``x`` onto the range of ``G``: ``z* = argmin_z ‖G(z) − x‖²₂``, ``x_proj = G(z*)``.

    ``R = restarts`` starting codes per image (``z0`` of shape ``(R, B, d)``, default ``N(0, I)``
    drawn from ``generator``) are optimised for ``T = steps`` steps of ``optimizer`` ("adam", or
    "gd" for plain gradient descent ``z ← z − lr ∇_z``) on ``Σ ‖G(z) − x‖²``; the restart with the
    smallest final residual is kept. All ``R × B`` codes of a chunk of ``batch_size`` images are
    one batch: since each code enters only its own term of the sum and both optimisers act
    element-wise, this equals ``R`` separate runs. ``steps = 0`` just picks the best start. ``G``
    must be in eval mode; its parameters receive no gradient.
    """
    d = _check_generator(G)
    check_images(x, "x")
    restarts = check_int(restarts, "restarts")
    steps = check_int(steps, "steps", minimum=0)
    lr = check_positive(lr, "lr")
    check_choice(optimizer, "optimizer", ("adam", "gd"))
    batch_size = check_int(batch_size, "batch_size")
    b = x.shape[0]
    if z0 is None:
        z0 = torch.randn(restarts, b, d, generator=generator)
    elif not isinstance(z0, Tensor) or tuple(z0.shape) != (restarts, b, d):
        shape = tuple(z0.shape) if isinstance(z0, Tensor) else type(z0).__name__
        raise ValueError(f"z0 must have shape (restarts, B, latent_dim) = {(restarts, b, d)}, got {shape}")
    z0 = z0.to(x.device, x.dtype)
    parts = []
    starts = range(0, b, batch_size)
    for i in tqdm(starts, desc="projecting", disable=not progress):
        parts.append(_project_chunk(G, x[i: i + batch_size], z0[:, i: i + batch_size], steps, lr, optimizer))
    return Projection(*(torch.cat(t) for t in zip(*((p.x_proj, p.z, p.residual) for p in parts))))


def _project_chunk(G: nn.Module, x: Tensor, z0: Tensor, steps: int, lr: float, optimizer: str) -> Projection:
    r, b, d = z0.shape
    target = x.detach().repeat(r, 1, 1, 1)  # restart-major, matching z0.reshape(r * b, d)
    z = z0.reshape(r * b, d).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr) if optimizer == "adam" else torch.optim.SGD([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (G(z) - target).pow(2).sum()
            (z.grad,) = torch.autograd.grad(loss, z)
            opt.step()
    with torch.no_grad():
        out = G(z)
        residual = (out - target).pow(2).flatten(1).sum(1).view(r, b)
        best = residual.argmin(0)
        cols = torch.arange(b, device=x.device)
        pick = best * b + cols
        return Projection(out[pick], z.detach()[pick], residual[best, cols])


def encoder_start(inverter: nn.Module, x: Tensor, restarts: int = 1, sigma: float = 0.3,
                  generator: torch.Generator | None = None, *, draws: Tensor | None = None) -> Tensor:
    """InvGAN's starting codes (Algorithm 5.1): ``z_0^(r) = I(x) + τ_r``, ``τ_r ~ N(0, σ² I)``, ``τ_1 = 0``.

    Returns ``(restarts, B, d)``. The first restart is the encoder's guess itself, so ``R = 1``
    is the deterministic encoder start. ``τ_r = σ ε_r`` with standard normal ``ε`` of shape
    ``(restarts, B, d)``: ``draws`` when given (e.g. :func:`per_image_normal`), else drawn from ``generator``.
    """
    check_images(x, "x")
    restarts = check_int(restarts, "restarts")
    sigma = check_positive(sigma, "sigma", allow_zero=True)
    with torch.no_grad():
        z = inverter(x)
    if draws is None:
        draws = torch.randn(restarts, *z.shape, generator=generator)
    elif not isinstance(draws, Tensor) or tuple(draws.shape) != (restarts, *z.shape):
        shape = tuple(draws.shape) if isinstance(draws, Tensor) else type(draws).__name__
        raise ValueError(f"draws must have shape (restarts, B, d) = {(restarts, *z.shape)}, got {shape}")
    noise = draws.to(z.device) * sigma
    noise[0] = 0.0
    return z.unsqueeze(0) + noise


def per_image_normal(x: Tensor, restarts: int, dim: int, seed: int) -> Tensor:
    """Standard normal draws ``(restarts, B, dim)`` whose column ``i`` depends only on image ``x[i]`` and
    ``seed`` (a generator seeded from a hash of the image's 8-bit pixels), not on the batch around it."""
    q = (x.detach().flatten(1).cpu().double() * 255).round().long()
    keys = (q * torch.arange(1, q.shape[1] + 1)).sum(1) * 1_000_003 + seed
    out = torch.empty(restarts, len(x), dim)
    for i, key in enumerate(keys.tolist()):
        out[:, i] = torch.randn(restarts, dim, generator=torch.Generator().manual_seed(key % (2**62)))
    return out.to(x.device)


class GANProjection(nn.Module):
    """The projection of Defense-GAN (``inverter=None``) or InvGAN as a transform ``x -> x_proj``.

    The random starts of each image come from :func:`per_image_normal`, seeded by ``seed`` and the image
    itself, so a given input is always projected the same way, whatever batch it comes in (the defense
    is deterministic, as in the source's evaluation), while different images get different starts;
    InvGAN turns those draws into :func:`encoder_start`'s codes around ``I(x)``.
    :meth:`project` returns the full :class:`Projection`. Use ``Preprocessed(projection, model)``
    for the defended classifier and ``bpda(projection)`` for the straight-through attack.
    """

    def __init__(self, G: nn.Module, *, restarts: int, steps: int, inverter: nn.Module | None = None, lr: float = 0.05,
                 sigma: float = 0.3, optimizer: str = "adam", seed: int = 0, batch_size: int = 256) -> None:
        super().__init__()
        _check_generator(G)
        self.G, self.inverter = G, inverter
        self.restarts, self.steps = check_int(restarts, "restarts"), check_int(steps, "steps", minimum=0)
        self.lr, self.sigma = check_positive(lr, "lr"), check_positive(sigma, "sigma", allow_zero=True)
        self.optimizer = check_choice(optimizer, "optimizer", ("adam", "gd"))
        self.seed, self.batch_size = check_int(seed, "seed", minimum=0), check_int(batch_size, "batch_size")

    @property
    def name(self) -> str:
        return f"{'InvGAN' if self.inverter is not None else 'DefenseGAN'} (R={self.restarts}, T={self.steps})"

    def project(self, x: Tensor, progress: bool = False) -> Projection:
        check_images(x, "x")
        d = _check_generator(self.G)
        draws = per_image_normal(x, self.restarts, d, self.seed)
        z0 = draws if self.inverter is None else encoder_start(self.inverter, x, self.restarts, self.sigma, draws=draws)
        return project(self.G, x, restarts=self.restarts, steps=self.steps, lr=self.lr, optimizer=self.optimizer, z0=z0,
                       batch_size=self.batch_size, progress=progress)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(x).x_proj


# --------------------------------------------------------------------------- the data-free inverter
def inverter_losses(G: nn.Module, inverter: nn.Module, disc: nn.Module, z: Tensor, *, hinge_eta: float = 5.0) -> dict[str, Tensor]:
    """The three loss terms of the inverter for codes ``z`` ``(B, d)`` (per-batch means).

    With ``x_g = G(z)``, ``ẑ = I(x_g)``, ``x_r = G(ẑ)``:
    ``semantic = mean_b max(‖x_g − x_r‖²₂, η)`` (hinge on the summed squared error, eq. 5.9),
    ``latent = mean_b ‖z − ẑ‖²₂`` (eq. 5.10), ``adv = −mean_b log D(x_r)`` (the non-saturating form of
    the inverter's side of eq. 5.11), and ``disc``: D's loss ``−log D(x_g) − log(1 − D(x_r))`` on
    detached images. ``x_g`` carries no graph; gradients reach ``I`` through ``G``.
    """
    check_positive(hinge_eta, "hinge_eta", allow_zero=True)
    with torch.no_grad():
        x_g = G(z)
    z_hat = inverter(x_g)
    x_r = G(z_hat)
    err = (x_g - x_r).pow(2).flatten(1).sum(1)
    semantic = torch.clamp(err, min=hinge_eta).mean()
    latent = (z - z_hat).pow(2).sum(1).mean()
    fake_logit = disc(x_r)
    adv = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
    real_d, fake_d = disc(x_g), disc(x_r.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_d, torch.ones_like(real_d))
              + F.binary_cross_entropy_with_logits(fake_d, torch.zeros_like(fake_d)))
    return {"adv": adv, "semantic": semantic, "latent": latent, "disc": d_loss, "mse": err.detach().mean() / x_g[0].numel()}


def inverter_step(G: nn.Module, inverter: nn.Module, disc: nn.Module, opt_i: torch.optim.Optimizer,
                  opt_d: torch.optim.Optimizer, *, batch_size: int, generator: torch.Generator, hinge_eta: float = 5.0,
                  lambda_adv: float = 1.0, lambda_semantic: float = 100.0, lambda_latent: float = 1.0) -> Step:
    """One data-free step: fresh codes ``z ~ N(0, I)``, the losses of :func:`inverter_losses`, then one Adam
    step of ``inverter`` on ``λ1 adv + λ2 semantic + λ3 latent`` and (when ``λ1 > 0``) one of ``disc`` on its loss.
    """
    d, dev = _check_generator(G), module_device(G)

    def step(idx: Tensor | None) -> dict[str, float]:
        z = torch.randn(batch_size, d, generator=generator).to(dev)
        losses = inverter_losses(G, inverter, disc, z, hinge_eta=hinge_eta)
        total = lambda_adv * losses["adv"] + lambda_semantic * losses["semantic"] + lambda_latent * losses["latent"]
        opt_i.zero_grad(set_to_none=True)
        total.backward(inputs=list(inverter.parameters()))
        opt_i.step()
        if lambda_adv > 0:  # D's loss uses detached images: its graph does not involve I
            opt_d.zero_grad(set_to_none=True)
            losses["disc"].backward(inputs=list(disc.parameters()))
            opt_d.step()
        return {"semantic": losses["semantic"].item(), "latent": losses["latent"].item(), "adv": losses["adv"].item(),
                "disc": losses["disc"].item(), "mse": losses["mse"].item(), "total": total.item()}

    return step


def train_inverter(
    G: nn.Module,
    inverter: nn.Module,
    disc: nn.Module,
    *,
    iterations: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    hinge_eta: float = 5.0,
    lambda_adv: float = 1.0,
    lambda_semantic: float = 100.0,
    lambda_latent: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training the inverter",
) -> History:
    """Train ``inverter`` to invert the frozen generator ``G`` from codes ``z ~ N(0, I)`` alone (no images).

    :func:`inverter_step` in :func:`~companion.train.train_loop`, with Adam for ``inverter`` and ``disc``
    (real: ``G(z)``, fake: ``G(I(G(z)))``). The source's ablation (Table 5.7) is ``hinge_eta=0,
    lambda_adv=0, lambda_semantic=1, lambda_latent=0``. ``G`` must be in eval mode and is never updated
    (its parameters are frozen during the run and restored after); ``inverter`` and ``disc`` are left in
    eval mode. The :class:`~companion.train.History` holds every loss term per iteration.
    """
    _check_generator(G)
    iterations = check_int(iterations, "iterations", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    for name, v in (("lambda_adv", lambda_adv), ("lambda_semantic", lambda_semantic), ("lambda_latent", lambda_latent)):
        check_positive(v, name, allow_zero=True)
    gen = torch.Generator().manual_seed(seed)
    opt_i = torch.optim.Adam(inverter.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    step = inverter_step(G, inverter, disc, opt_i, opt_d, batch_size=batch_size, generator=gen, hinge_eta=hinge_eta,
                         lambda_adv=lambda_adv, lambda_semantic=lambda_semantic, lambda_latent=lambda_latent)
    with frozen(G):
        return train_loop(step, [inverter, disc], generator=gen, steps=iterations, desc=desc, progress=progress)


def latent_recovery_error(G: nn.Module, inverter: nn.Module, z: Tensor) -> Tensor:
    """``‖I(G(z)) − z‖₂`` per code, shape ``(B,)`` (the quantity of Theorem 5.1), on the generator's device."""
    d = _check_generator(G)
    if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != d:
        raise ValueError(f"z must have shape (B, {d})")
    z = z.to(module_device(G))
    with torch.no_grad():
        return (inverter(G(z)) - z).norm(dim=1)


# --------------------------------------------------------------------------- detection
def detection_scores(model: nn.Module, x: Tensor, x_proj: Tensor) -> dict[str, Tensor]:
    """Per-image detection scores ``(B,)``: ``image = ‖x − x_proj‖₂`` (Defense-GAN's) and
    ``semantic = ‖Φ(x) − Φ(x_proj)‖₂`` (eq. 5.12) with ``Φ = model.features`` (the classifier without
    its last layer). Large scores flag adversarial inputs."""
    check_images(x, "x")
    check_images(x_proj, "x_proj")
    if x.shape != x_proj.shape:
        raise ValueError(f"x and x_proj must have the same shape, got {tuple(x.shape)} and {tuple(x_proj.shape)}")
    if not hasattr(model, "features"):
        raise TypeError(f"model must expose features(x) (the penultimate layer Φ), got {type(model).__name__}")
    with torch.no_grad():
        semantic = (model.features(x) - model.features(x_proj)).norm(dim=1)
    return {"image": (x - x_proj).flatten(1).norm(dim=1), "semantic": semantic}


def detection_auc(scores_clean: Tensor, scores_adv: Tensor) -> float:
    """ROC AUC of telling attacked inputs (positives) from clean ones by a score (higher = attacked).

    0.5 is chance, 1 perfect separation (``sklearn.metrics.roc_auc_score``).
    """
    from sklearn.metrics import roc_auc_score

    for name, s in (("scores_clean", scores_clean), ("scores_adv", scores_adv)):
        if not isinstance(s, Tensor) or s.ndim != 1 or s.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor of scores")
    labels = np.r_[np.zeros(len(scores_clean)), np.ones(len(scores_adv))]
    return float(roc_auc_score(labels, torch.cat([scores_clean, scores_adv]).detach().cpu().double().numpy()))

"""A small DCGAN for 28×28 images: generator, discriminator, the generator's mirror (an encoder),
a stable training recipe, and simple measures of sample quality.

Architecture (Radford et al. 2016, shrunk to MNIST size; ``w = width``, ``d = latent_dim``):

* :class:`Generator` ``G``: ``z (B, d)`` -> FC(d → 2w·7·7) + BN + ReLU -> ConvT(2w → w, k4, s2) + BN + ReLU
  -> ConvT(w → C, k4, s2) -> sigmoid: images ``(B, C, 28, 28)`` in [0, 1].
* :class:`Discriminator` ``D``: Conv(C → w, k4, s2) + LeakyReLU(0.2) -> Conv(w → 2w, k4, s2) + BN + LeakyReLU
  -> FC(2w·7·7 → 1): one logit per image.
* :class:`Encoder`: the mirror of ``G`` (the discriminator's body with a ``d``-dimensional head): image -> latent.

Training recipe (:func:`train_gan`): the non-saturating GAN loss (Goodfellow et al. 2014) with Adam
(lr 2e-4, β = (0.5, 0.999)) and batch 64, as in DCGAN; one-sided label smoothing (real target 0.9)
keeps the discriminator from saturating early on the tiny embedded data set. ``z ~ N(0, I)``.
``G`` is used in eval mode (BatchNorm running statistics) after training, so that an image depends
only on its own code: the projection of :mod:`companion.defenses.defense_gan` relies on that.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._validate import check_images, check_int, check_positive
from .train import History, Step, module_device, train_loop

__all__ = ["Discriminator", "Encoder", "Generator", "feature_frechet_distance", "gan_step", "nearest_neighbour_distance",
           "sample", "sample_quality", "train_gan"]


class Generator(nn.Module):
    """DCGAN generator ``G: R^d -> [0, 1]^{C×28×28}`` (see the module docstring)."""

    def __init__(self, latent_dim: int = 32, width: int = 32, out_channels: int = 1) -> None:
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("width", width), ("out_channels", out_channels)):
            check_int(v, name)
        self.latent_dim, self.width, self.out_channels = latent_dim, width, out_channels
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * width * 49), nn.BatchNorm1d(2 * width * 49), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"Generator expects latent codes of shape (B, {self.latent_dim}), got {shape}")
        return self.body(self.fc(z).view(-1, 2 * self.width, 7, 7))


def _conv_body(in_channels: int, width: int) -> nn.Sequential:
    """The shared down-sampling body of :class:`Discriminator` and :class:`Encoder`: (B, C, 28, 28) -> (B, 2w·49)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
        nn.Flatten(),
    )


class Discriminator(nn.Module):
    """DCGAN discriminator: images ``(B, C, 28, 28)`` -> logits ``(B,)`` (real > 0)."""

    def __init__(self, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        check_int(width, "width")
        check_int(in_channels, "in_channels")
        self.in_channels = in_channels
        self.body = _conv_body(in_channels, width)
        self.head = nn.Linear(2 * width * 49, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_28(x, self.in_channels, "Discriminator")
        return self.head(self.body(x)).squeeze(1)


class Encoder(nn.Module):
    """The generator's mirror image: images ``(B, C, 28, 28)`` -> latent codes ``(B, d)`` (the inverter ``I``)."""

    def __init__(self, latent_dim: int = 32, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("width", width), ("in_channels", in_channels)):
            check_int(v, name)
        self.latent_dim, self.in_channels = latent_dim, in_channels
        self.body = _conv_body(in_channels, width)
        self.head = nn.Linear(2 * width * 49, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_28(x, self.in_channels, "Encoder")
        return self.head(self.body(x))


def _check_28(x: torch.Tensor, channels: int, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (channels, 28, 28):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects images of shape (B, {channels}, 28, 28), got {shape}")


def gan_step(G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, x: torch.Tensor,
             *, generator: torch.Generator, real_label: float = 0.9) -> Step:
    """One step of the non-saturating GAN game on the real images ``x[idx]``.

    D descends ``BCE(D(x), real_label) + BCE(D(G(z)), 0)``, then G descends ``BCE(D(G(z)), 1)`` on the
    same ``z ~ N(0, I)`` (drawn from ``generator``). Logs both losses and D's mean output on each side.
    """
    dev = module_device(G)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        real = x[idx].to(dev)
        z = torch.randn(len(real), G.latent_dim, generator=generator).to(dev)
        fake = G(z)
        d_real, d_fake = D(real), D(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, real_label))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_out = D(fake)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "d_real": torch.sigmoid(d_real).mean().item(),
                "d_fake": torch.sigmoid(d_fake).mean().item()}

    return step


def train_gan(
    G: Generator,
    D: Discriminator,
    x: torch.Tensor,
    *,
    iterations: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    real_label: float = 0.9,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training the GAN",
) -> History:
    """Train ``G`` and ``D`` on images ``x`` (``(N, C, 28, 28)`` in [0, 1]): :func:`gan_step` in :func:`~companion.train.train_loop`.

    Real batches come from shuffled passes over ``x`` and ``z ~ N(0, I)`` from one generator seeded
    with ``seed``; Adam for both. Both networks are left in eval mode. The :class:`~companion.train.History`
    holds ``d_loss``, ``g_loss``, ``d_real`` and ``d_fake`` per iteration.
    """
    check_images(x, "x", channels=G.out_channels)
    iterations = check_int(iterations, "iterations", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    if not 0.5 <= real_label <= 1.0:
        raise ValueError(f"real_label must lie in [0.5, 1], got {real_label}")
    gen = torch.Generator().manual_seed(seed)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    step = gan_step(G, D, opt_g, opt_d, x, generator=gen, real_label=real_label)
    return train_loop(step, [G, D], generator=gen, n=len(x), batch_size=batch_size, steps=iterations, desc=desc,
                      progress=progress)


def sample(G: Generator, n: int, *, generator: torch.Generator | None = None, batch_size: int = 1024) -> torch.Tensor:
    """``n`` images ``G(z)``, ``z ~ N(0, I)`` (no grad, G in its current mode; call ``G.eval()`` first)."""
    n = check_int(n, "n")
    dev = module_device(G)
    z = torch.randn(n, G.latent_dim, generator=generator).to(dev)
    with torch.no_grad():
        return torch.cat([G(z[i: i + batch_size]) for i in range(0, n, batch_size)])


def feature_frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, k)`` and ``(M, k)``.

    ``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})``: the FID formula (Heusel et al. 2017) on
    whatever features are given. With a small classifier's features Φ it is a "classifier-feature FID",
    comparable only with itself (never with Inception FIDs).
    """
    from scipy import linalg

    a, b = (np.asarray(t.detach().cpu().double()) for t in (feat_a, feat_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature matrices (N, k), (M, k) with N, M >= 2, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(mu @ mu + np.trace(ca + cb - 2 * covmean))


def nearest_neighbour_distance(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from each image of ``x`` to its nearest image in ``reference``, shape ``(B,)``.

    Generated samples much closer to the training images than held-out real images are would mean
    the GAN memorised its data.
    """
    check_images(x, "x")
    check_images(reference, "reference")
    return torch.cdist(x.flatten(1), reference.flatten(1)).min(dim=1).values


def sample_quality(classifier: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Classifier-based quality of generated digits.

    ``confidence``: mean max-softmax probability (recognisable digits score near the classifier's
    confidence on real digits); ``confident_share``: share above 0.9; ``class_entropy``: entropy (in
    bits) of the predicted-class histogram, log2(10) ≈ 3.32 when all ten classes are equally present
    (lower: mode collapse).
    """
    check_images(images, "images")
    dev = module_device(classifier)
    with torch.no_grad():
        p = torch.cat([classifier(images[i: i + 512].to(dev)).softmax(1) for i in range(0, len(images), 512)])
    conf = p.max(1).values
    hist = torch.bincount(p.argmax(1), minlength=p.shape[1]).double() / len(p)
    entropy = float(-(hist[hist > 0] * hist[hist > 0].log2()).sum())
    return {"confidence": float(conf.mean()), "confident_share": float((conf > 0.9).double().mean()),
            "class_entropy": entropy}

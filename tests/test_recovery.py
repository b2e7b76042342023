"""companion.recovery: the MimicGAN corruptions, oracles, surrogate, Algorithm 1 and the batch defense."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from companion import pretrained
from companion.data import load_mnist
from companion.gan import Discriminator, Generator
from companion.recovery import (CORRUPTIONS, PAPER_SETTINGS, MimicGANDefense, Surrogate, _blur, corrupt, inpainting,
                                mimic_loss, mimic_project, negative, occlusion, oracle, stuck_pixels)

NOISY = ("stuck_pixels", "occlusion", "inpainting", "drop_pixels")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return Generator(latent_dim=6, width=4).eval(), Discriminator(width=4).eval()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_mnist("test")[0][:6]


# --------------------------------------------------------------------------- corruptions
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("size", [28, 64])
def test_every_corruption_keeps_shape_and_dtype_and_is_finite(name: str, size: int) -> None:
    x = torch.rand(3, 1, size, size, generator=gen(1))
    y = corrupt(name, x, gen(2))
    assert y.shape == x.shape and y.dtype == x.dtype and bool(torch.isfinite(y).all())
    assert torch.equal(y, corrupt(name, x, gen(2)))          # reproducible with a seeded generator
    if name in NOISY:
        assert not torch.equal(y, corrupt(name, x, gen(3)))  # and random with another seed


@pytest.mark.parametrize("name", NOISY)
def test_noisy_corruptions_need_an_explicit_generator(name: str) -> None:
    with pytest.raises(TypeError, match="Generator"):
        corrupt(name, torch.rand(1, 1, 28, 28), None)


def test_blur_is_opencv_gaussian_blur_with_reflect_101_border() -> None:
    # at 64 px, k = 15: OpenCV's sigma 2.6 and radius 7; scipy's "mirror" is OpenCV's BORDER_REFLECT_101
    x = torch.rand(2, 1, 64, 64, generator=gen(4), dtype=torch.float64)
    ref = np.stack([ndimage.gaussian_filter(im[0].numpy(), 2.6, mode="mirror", truncate=7 / 2.6) for im in x])
    assert np.allclose(_blur(x, 15)[:, 0].numpy(), ref, atol=1e-12)
    # at 28 px the same blur is scaled: sigma 2.6 * 28/64, radius round(7 * 28/64) = 3
    x28 = x[..., :28, :28]
    ref28 = np.stack([ndimage.gaussian_filter(im[0].numpy(), 2.6 * 28 / 64, mode="mirror", truncate=3 / (2.6 * 28 / 64))
                      for im in x28])
    assert np.allclose(_blur(x28, 15)[:, 0].numpy(), ref28, atol=1e-12)


def test_negative_and_gray_blur_of_constant_images() -> None:
    for c in (0.0, 0.3, 0.9):
        x = torch.full((1, 1, 28, 28), c)
        assert torch.allclose(negative(x), torch.full_like(x, 1 - c), atol=1e-6)       # 1 - x on [0, 1]
        assert torch.allclose(corrupt("gray_blur", x), torch.full_like(x, min(c, 120 / 255)), atol=1e-6)
    assert CORRUPTIONS["blur_negative"] is CORRUPTIONS["negative"]
    x = torch.rand(2, 1, 28, 28, generator=gen(5))
    assert float(corrupt("gray_blur", x).max()) <= 120 / 255 + 1e-6
    assert torch.allclose(negative(x, kernel=11), 1 - (_blur(2 * x - 1, 11) + 1) / 2, atol=1e-6)   # the text's scale


@pytest.mark.parametrize(("size", "column"), [(28, 11), (64, 26)])
def test_stuck_pixels_copy_one_column_with_noise_shared_by_the_batch(size: int, column: int) -> None:
    x = torch.rand(4, 1, size, size, generator=gen(6))
    y = stuck_pixels(x, gen(7))
    assert torch.equal(y[..., column:], x[..., column:])
    noise = y[..., :column] - x[..., column: column + 1]          # the noise on [0, 1]
    assert torch.allclose(noise, noise[:1].expand_as(noise), atol=1e-6)   # the same for every image
    assert 0.09 < float(noise[0].std()) < 0.16                     # 0.25 on [-1, 1] is 0.125 on [0, 1]
    assert torch.allclose(stuck_pixels(x, sigma=0.0)[..., :column], x[..., column: column + 1].expand(-1, -1, -1, column))


def test_occlusion_is_the_codes_cross_of_noise() -> None:
    x = torch.rand(3, 1, 64, 64, generator=gen(8))
    y = occlusion(x, gen(9))
    cross = torch.zeros(64, 64, dtype=torch.bool)
    cross[24:44, 12:54] = True                  # the appendix code's mask, and its transpose
    cross[12:54, 24:44] = True
    assert torch.equal(y[..., ~cross], x[..., ~cross])
    bars = y[..., cross]
    assert abs(float(bars.mean()) - 0.5) < 0.02 and abs(float(bars.std()) - 0.25) < 0.02   # 0.5 + 0.25 n on [0, 1]
    assert not torch.allclose(bars[0], bars[1])  # fresh noise per image
    assert torch.equal(oracle("occlusion")(x)[..., cross], torch.full_like(bars, 0.5))


def test_inpainting_multiplies_horizontal_bands_by_one_shared_noise_mask() -> None:
    x = torch.rand(3, 1, 64, 64, generator=gen(10)) * 0.4 + 0.55     # no pixel at 0.5 on [0, 1]
    y = inpainting(x, gen(11))
    bands = torch.zeros(64, 64, dtype=torch.bool)
    for start in range(4, 64, 8):
        bands[start: start + 4, 12:54] = True
    assert torch.equal(y[..., ~bands], x[..., ~bands])
    factor = (2 * y[..., bands] - 1) / (2 * x[..., bands] - 1)        # the multiplier on [-1, 1]
    assert torch.allclose(factor, factor[:1].expand_as(factor), atol=1e-4)   # one mask for the batch
    assert 0.4 < float(factor[0].std()) < 0.6                       # 0.5 * randn
    x28 = torch.rand(1, 1, 28, 28, generator=gen(12)) * 0.4 + 0.55
    rows = (inpainting(x28, gen(13)) != x28).any(dim=3)[0, 0]       # rows touched by a band
    assert rows.sum() == 16 and not rows[:2].any()                  # 8 bands of 2 rows at 28 px


def test_binary_and_drop_pixels(digits: torch.Tensor) -> None:
    y = corrupt("binary", digits)
    assert torch.equal(y, (digits > 0).float())      # MNIST's median pixel is the black background
    x = torch.rand(5, 1, 28, 28, generator=gen(14)) * 0.4           # no pixel at 0.5
    d = corrupt("drop_pixels", x, gen(15))
    dropped = d == 0.5                                              # 0 on [-1, 1] is 0.5 on [0, 1]
    assert torch.equal(dropped.flatten(1).sum(1), torch.full((5,), round(0.7 * 784)))
    assert torch.allclose(d[~dropped], x[~dropped], atol=1e-6)
    assert not torch.equal(dropped[0], dropped[1])                  # a mask per image
    with pytest.raises(ValueError, match="rate"):
        corrupt("drop_pixels", x, gen(0), rate=1.5)


def test_oracles_are_the_noise_free_differentiable_corruptions() -> None:
    x = torch.rand(2, 1, 28, 28, generator=gen(16))
    for name in ("gray_blur", "negative", "blur_negative"):
        assert torch.equal(oracle(name)(x), corrupt(name, x, gen(0)))
    for name in ("stuck_pixels", "occlusion", "inpainting"):
        assert torch.equal(oracle(name)(x), corrupt(name, x, None, sigma=0.0))
        noisy = corrupt(name, x, gen(17))
        assert float((noisy - oracle(name)(x)).abs().max()) > 0.01
    for name in ("stuck_pixels", "inpainting", "occlusion"):      # the realised corruption, noise included
        assert torch.equal(oracle(name, seed=3)(x), corrupt(name, x, gen(3)))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(oracle("gray_blur")(xg).sum() + oracle("inpainting", seed=1)(xg).sum(), xg)
    assert float(g.abs().sum()) > 0
    for name in ("binary", "drop_pixels"):
        with pytest.raises(ValueError, match="no oracle"):
            oracle(name)
    with pytest.raises(ValueError, match="unknown corruption"):
        oracle("stylize")
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt("blur", x)


def test_corruptions_reject_bad_images() -> None:
    for bad, err in ((torch.rand(1, 28, 28), ValueError), (torch.rand(1, 1, 28, 28) + 1, ValueError),
                     (torch.zeros(1, 1, 28, 28, dtype=torch.long), TypeError), ([0.5], TypeError)):
        with pytest.raises(err):
            negative(bad)


# --------------------------------------------------------------------------- surrogate
def test_surrogate_initialisation_and_shapes() -> None:
    s = Surrogate(generator=gen(0))
    params = torch.cat([p.detach().flatten() for p in s.parameters()])
    assert 0.015 < float(params.std()) < 0.025 and abs(float(params.mean())) < 0.003
    assert all(torch.equal(a, b) for a, b in zip(s.parameters(), Surrogate(generator=gen(0)).parameters()))
    assert s.mask.shape == s.weight.shape == (1, 28, 28) and s.conv1.out_channels == 16 and s.conv1.kernel_size == (5, 5)
    x = torch.rand(3, 1, 28, 28, generator=gen(1))
    out = s(x)
    assert out.shape == x.shape and float((out.detach() - 0.5).abs().max()) < 0.1      # about 0.5 before fitting
    near = Surrogate(generator=gen(0), init="identity", activation="tanh")
    assert float((near(x).detach() - x).abs().max()) < 0.05
    with pytest.raises(ValueError):
        s(torch.rand(3, 1, 27, 27))
    with pytest.raises(TypeError, match="Generator"):
        Surrogate(generator=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Surrogate(generator=gen(0), activation="sigmoid")
    with pytest.raises(ValueError):
        Surrogate(generator=gen(0), kernel=4)


# --------------------------------------------------------------------------- Algorithm 1
def test_mimic_loss_terms(tiny) -> None:
    G, D = tiny
    x = G(torch.randn(3, 6, generator=gen(2))).detach()
    y = negative(x)
    terms = mimic_loss(y, x, lambda v: v, D, lam_identity=0.5, lam_adv=0.1)
    l1 = 2 * (y - x).abs().sum()
    assert torch.allclose(terms["obs"], l1) and torch.allclose(terms["identity"], l1)
    assert torch.allclose(terms["adv"], torch.log(1 - torch.sigmoid(D(x))).sum(), atol=1e-5)
    assert torch.allclose(terms["total"], l1 + 0.5 * l1 + 0.1 * terms["adv"])
    assert set(mimic_loss(y, x, negative, None, lam_identity=0, lam_adv=0)) == {"obs", "total"}


def _plain_projection(G, D, y, *, steps, lr, lam_adv, seed, record_every):
    """A direct implementation of the f = identity special case: mean start, RMSProp (decay 0.9), ℓ1 in [-1, 1] units."""
    z = torch.randn(1000, G.latent_dim, generator=gen(seed)).mean(0).expand(len(y), -1).clone().requires_grad_(True)
    opt = torch.optim.RMSprop([z], lr=lr, alpha=0.9)
    losses = []
    for k in range(steps):
        x = G(z)
        loss = 2 * (y - x).abs().sum() + lam_adv * torch.nn.functional.logsigmoid(-D(x)).sum()
        (z.grad,) = torch.autograd.grad(loss, z)   # no gradient into G or D
        opt.step()
        if (k + 1) % record_every == 0:
            with torch.no_grad():
                x = G(z)
                losses.append(float(2 * (y - x).abs().sum() + lam_adv * torch.nn.functional.logsigmoid(-D(x)).sum()))
    return z.detach(), losses


def test_identity_surrogate_is_plain_projection(tiny) -> None:
    G, D = tiny
    y = negative(G(torch.randn(4, 6, generator=gen(3))).detach())
    rec = mimic_project(G, D, y, surrogate="identity", outer=3, surrogate_steps=7, latent_steps=5, lam_adv=0.01,
                        lr_latent=0.05, generator=gen(4))
    z, losses = _plain_projection(G, D, y, steps=15, lr=0.05, lam_adv=0.01, seed=4, record_every=5)
    assert torch.allclose(rec.z, z, atol=1e-5)
    assert np.allclose(rec.history["loss"][1:], losses, rtol=1e-5)
    assert isinstance(rec.surrogate, torch.nn.Identity) and rec.surrogate_steps == 0 and rec.latent_steps == 15
    assert torch.allclose(rec.images, G(rec.z).detach(), atol=1e-6)
    # each code enters only its own terms: a sub-batch gets the same codes
    half = mimic_project(G, D, y[:2], surrogate="identity", outer=3, latent_steps=5, lam_adv=0.01, lr_latent=0.05,
                         generator=gen(4))
    assert torch.allclose(half.z, rec.z[:2], atol=1e-6)


def test_oracle_switch_takes_no_surrogate_step(tiny) -> None:
    G, D = tiny
    clean = G(torch.randn(3, 6, generator=gen(5))).detach()
    f = oracle("inpainting")
    rec = mimic_project(G, D, corrupt("inpainting", clean, gen(6)), surrogate=f, outer=2, surrogate_steps=9,
                        latent_steps=4, lr_latent=0.05, generator=gen(7), clean=clean)
    assert rec.surrogate is f and rec.surrogate_steps == 0 and rec.latent_steps == 8
    assert len(rec.history["psnr"]) == len(rec.history["loss"]) == 3


def test_mimicgan_fits_the_surrogate_and_lowers_the_loss(tiny) -> None:
    G, D = tiny
    clean = G(torch.randn(5, 6, generator=gen(8))).detach()
    y = negative(clean)
    rec = mimic_project(G, D, y, outer=4, surrogate_steps=5, latent_steps=5, lam_adv=1e-4, lam_identity=0.1,
                        lr_surrogate=0.01, lr_latent=0.05, generator=gen(9), clean=clean)
    assert isinstance(rec.surrogate, Surrogate) and rec.surrogate_steps == 20 and rec.latent_steps == 20
    assert set(rec.history) == {"loss", "surrogate_loss", "psnr"} and all(len(v) == 5 for v in rec.history.values())
    assert rec.history["surrogate_loss"][-1] < 0.8 * rec.history["surrogate_loss"][0]
    assert rec.history["loss"][-1] < rec.history["loss"][0]
    assert rec.mimicked().shape == y.shape
    fresh = Surrogate(generator=gen(9), size=28)   # drawn after the 1,000 start codes: not the run's initial surrogate
    assert not all(torch.equal(a, b) for a, b in zip(fresh.parameters(), rec.surrogate.parameters()))
    again = mimic_project(G, D, y, outer=4, surrogate_steps=5, latent_steps=5, lam_adv=1e-4, lam_identity=0.1,
                          lr_surrogate=0.01, lr_latent=0.05, generator=gen(9), clean=clean)
    assert torch.equal(again.z, rec.z)                                    # reproducible


def test_a_surrogate_instance_is_a_warm_start_and_is_not_changed(tiny) -> None:
    G, D = tiny
    y = negative(G(torch.randn(2, 6, generator=gen(10))).detach())
    start = Surrogate(generator=gen(11), init="identity")
    before = [p.detach().clone() for p in start.parameters()]
    rec = mimic_project(G, None, y, surrogate=start, outer=2, surrogate_steps=3, latent_steps=2, lr_surrogate=0.01,
                        generator=gen(12))
    assert rec.surrogate is not start and rec.surrogate_steps == 6
    assert all(torch.equal(a, b) for a, b in zip(before, start.parameters()))


def test_z_box_clips_the_codes(tiny) -> None:
    G, D = tiny
    y = negative(G(torch.randn(3, 6, generator=gen(13))).detach())
    rec = mimic_project(G, D, y, surrogate="identity", outer=3, latent_steps=10, lr_latent=0.5, z_box=0.05,
                        generator=gen(14))
    assert float(rec.z.abs().max()) <= 0.05 + 1e-7
    free = mimic_project(G, D, y, surrogate="identity", outer=3, latent_steps=10, lr_latent=0.5, generator=gen(14))
    assert float(free.z.abs().max()) > 0.05


def test_gan_is_frozen_untouched_and_flags_restored(tiny) -> None:
    G, D = tiny
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in (G, D)]
    params = list(G.parameters()) + list(D.parameters())
    flags = [i % 2 == 0 for i in range(len(params))]
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)
    y = negative(G(torch.randn(2, 6, generator=gen(15))).detach())
    mimic_project(G, D, y, outer=2, surrogate_steps=2, latent_steps=2, lam_adv=0.1, generator=gen(16))
    assert [p.requires_grad for p in params] == flags and all(p.grad is None for p in params)
    for m, state in zip((G, D), states):
        assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
        assert not m.training

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        mimic_project(G, D, y, surrogate=broken, outer=1, latent_steps=1, generator=gen(16))
    assert [p.requires_grad for p in params] == flags


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(y_obs=torch.full((2, 1, 28, 28), float("nan"))), ValueError, "NaN"),
    (dict(y_obs=torch.rand(2, 1, 27, 27)), ValueError, "shape"),
    (dict(y_obs=torch.rand(1, 28, 28)), ValueError, "shape"),
    (dict(y_obs=torch.zeros(2, 1, 28, 28, dtype=torch.long)), TypeError, "floating"),
    (dict(lam_identity=-0.1), ValueError, "lam_identity"),
    (dict(lam_adv=-1.0), ValueError, "lam_adv"),
    (dict(lr_latent=0.0), ValueError, "lr_latent"),
    (dict(lr_surrogate=float("inf")), ValueError, "lr_surrogate"),
    (dict(outer=0), ValueError, "outer"),
    (dict(latent_steps=1.5), TypeError, "latent_steps"),
    (dict(z_box=-1.0), ValueError, "z_box"),
    (dict(surrogate="learned"), ValueError, "surrogate"),
    (dict(surrogate=3), TypeError, "surrogate"),
    (dict(activation="gelu"), ValueError, "activation"),
    (dict(generator=None), TypeError, "Generator"),
    (dict(D=None, lam_adv=1e-4), TypeError, "discriminator"),
    (dict(clean=torch.rand(3, 1, 28, 28)), ValueError, "clean"),
])
def test_mimic_project_rejects_bad_inputs(tiny, kwargs, error, match) -> None:
    G, D = tiny
    args = dict(G=G, D=D, y_obs=torch.rand(2, 1, 28, 28), generator=gen(0), outer=1, latent_steps=1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        mimic_project(args.pop("G"), args.pop("D"), args.pop("y_obs"), **args)


def test_mimic_project_needs_eval_mode_networks() -> None:
    G, D = Generator(latent_dim=4, width=2), Discriminator(width=2)
    with pytest.raises(ValueError, match="eval"):
        mimic_project(G, D, torch.rand(1, 1, 28, 28), generator=gen(0))
    with pytest.raises(ValueError, match="D is in training mode"):
        mimic_project(G.eval(), D, torch.rand(1, 1, 28, 28), lam_adv=0.1, generator=gen(0))


def test_paper_settings_are_mimic_project_keywords(tiny) -> None:
    G, D = tiny
    assert set(PAPER_SETTINGS) == {"gray_blur", "stylize", "negative", "stuck_pixels", "occlusion", "inpainting"}
    assert PAPER_SETTINGS["inpainting"]["activation"] == "tanh" and PAPER_SETTINGS["gray_blur"]["lr_surrogate"] == 2e-4
    for settings in PAPER_SETTINGS.values():
        mimic_project(G, D, torch.rand(1, 1, 28, 28), outer=1, surrogate_steps=1, latent_steps=1, generator=gen(0),
                      **settings)


# --------------------------------------------------------------------------- the defense
def test_defense_is_a_deterministic_batch_transform(tiny) -> None:
    G, D = tiny
    x = torch.rand(3, 1, 28, 28, generator=gen(17))
    defense = MimicGANDefense(G, D, outer=2, surrogate_steps=2, latent_steps=3, lam_identity=0.1, lam_adv=1e-4)
    out = defense(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, defense(x))
    with torch.no_grad():                    # classifiers are evaluated without gradients: the defense still fits
        assert torch.equal(defense(x), out)
    assert defense.name == "MimicGAN (T=2, T1=2, T2=3)"
    plain = MimicGANDefense(G, D, surrogate="identity", outer=2, latent_steps=3)
    assert plain.name == "plain projection (T=2, T1=20, T2=3)" and plain.recover(x).surrogate_steps == 0
    with pytest.raises(TypeError, match="unknown setting"):
        MimicGANDefense(G, D, steps=3)
    with pytest.raises(ValueError, match="lam_adv"):
        MimicGANDefense(G, D, lam_adv=-1.0)
    with pytest.raises(ValueError):
        defense(x + 1)


def test_defense_with_randomness_draws_a_fresh_surrogate_per_call(tiny) -> None:
    G, D = tiny
    x = torch.rand(3, 1, 28, 28, generator=gen(17))
    settings = dict(outer=2, surrogate_steps=2, latent_steps=3, lam_identity=0.1)
    randomised = MimicGANDefense(G, D, randomness=gen(5), **settings)
    first, second = randomised(x), randomised(x)
    assert not torch.equal(first, second)                     # another surrogate start, another output
    again = MimicGANDefense(G, D, randomness=gen(5), **settings)
    assert torch.equal(again(x), first) and torch.equal(again(x), second)   # the draws are reproducible
    with pytest.raises(TypeError, match="randomness"):
        MimicGANDefense(G, D, randomness=5)


# --------------------------------------------------------------------------- the shipped GAN
def test_mimicgan_beats_plain_projection_on_negative_with_the_shipped_gan() -> None:
    m = pretrained.load("mnist_dcgan")
    G, D = m["generator"], m["discriminator"]
    x = load_mnist("test")[0][:10]
    y = corrupt("negative", x, gen(1))
    common = dict(outer=5, surrogate_steps=10, latent_steps=15, lam_adv=1e-4, lr_surrogate=0.01, lr_latent=0.03,
                  generator=gen(0), clean=x)
    plain = mimic_project(G, D, y, surrogate="identity", **common)
    mimic = mimic_project(G, D, y, **common)
    assert mimic.history["psnr"][-1] > plain.history["psnr"][-1] + 3
    assert mimic.history["psnr"][-1] > mimic.history["psnr"][0]

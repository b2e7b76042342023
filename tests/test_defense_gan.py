"""companion.defenses.defense_gan: projection (Defense-GAN / InvGAN), data-free inverter, detectors."""
from __future__ import annotations

import pytest
import torch

from companion import pretrained
from companion.attacks import _margin, bpda, on_manifold_attack, overpowered_attack
from companion.defenses import (GANProjection, Preprocessed, detection_auc, detection_scores, encoder_start, inverter_losses,
                                latent_recovery_error, project, train_inverter)
from companion.defenses.defense_gan import per_image_normal
from companion.gan import Discriminator, Encoder, Generator
from companion.metrics import accuracy


@pytest.fixture(scope="module")
def tiny() -> tuple[Generator, Encoder, Discriminator]:
    torch.manual_seed(0)
    return Generator(latent_dim=6, width=4).eval(), Encoder(latent_dim=6, width=4).eval(), Discriminator(width=4).eval()


@pytest.fixture(scope="module")
def shipped() -> dict:
    return pretrained.load("mnist_dcgan")


def test_projection_lowers_the_error_and_has_the_right_shapes(tiny) -> None:
    G = tiny[0]
    x = G(torch.randn(5, 6, generator=torch.Generator().manual_seed(1))).detach()
    start = project(G, x, restarts=2, steps=0, generator=torch.Generator().manual_seed(2))
    done = project(G, x, restarts=2, steps=60, lr=0.1, generator=torch.Generator().manual_seed(2))
    assert done.x_proj.shape == x.shape and done.z.shape == (5, 6) and done.residual.shape == (5,)
    assert bool((done.residual < start.residual).all())
    assert torch.allclose(done.residual, (done.x_proj - x).pow(2).flatten(1).sum(1), rtol=1e-4, atol=1e-6)
    gd = project(G, x, restarts=2, steps=60, lr=0.05, optimizer="gd", generator=torch.Generator().manual_seed(2))
    assert bool((gd.residual <= start.residual + 1e-6).all())


def test_batched_restarts_equal_separate_runs(tiny) -> None:
    G = tiny[0]
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    z0 = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(4))
    together = project(G, x, restarts=3, steps=20, z0=z0)
    alone = [project(G, x, restarts=1, steps=20, z0=z0[r: r + 1]) for r in range(3)]
    residuals = torch.stack([a.residual for a in alone])  # (R, B)
    best = residuals.argmin(0)
    assert torch.allclose(together.residual, residuals.min(0).values, rtol=1e-5, atol=1e-6)
    for i in range(4):
        assert torch.allclose(together.x_proj[i], alone[int(best[i])].x_proj[i], atol=1e-5)
    chunked = project(G, x, restarts=3, steps=20, z0=z0, batch_size=3)  # chunks of images change nothing
    assert torch.allclose(chunked.residual, together.residual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "error"), [
    (dict(restarts=0), ValueError), (dict(steps=-1), ValueError), (dict(optimizer="lbfgs"), ValueError),
    (dict(lr=0.0), ValueError), (dict(restarts=2, z0=torch.zeros(1, 2, 6)), ValueError), (dict(steps=1.5), TypeError)])
def test_projection_rejects_bad_arguments(tiny, kwargs, error) -> None:
    with pytest.raises(error):
        project(tiny[0], torch.rand(2, 1, 28, 28), **kwargs)


def test_projection_needs_an_eval_mode_generator() -> None:
    G = Generator(latent_dim=4, width=2)  # training mode
    with pytest.raises(ValueError, match="eval"):
        project(G, torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError):
        project(G.eval(), torch.rand(1, 1, 28, 28) + 1)


def test_encoder_start_and_gan_projection(tiny) -> None:
    G, E, _ = tiny
    x = torch.rand(3, 1, 28, 28)
    z0 = encoder_start(E, x, restarts=4, sigma=0.3, generator=torch.Generator().manual_seed(0))
    assert z0.shape == (4, 3, 6) and torch.allclose(z0[0], E(x).detach())
    assert 0.1 < float((z0[1:] - z0[0]).std()) < 0.6
    inv = GANProjection(G, restarts=1, steps=0, inverter=E)
    assert torch.allclose(inv(x), G(E(x)).detach(), atol=1e-6) and inv.name == "InvGAN (R=1, T=0)"
    # InvGAN's projection starts from encoder_start, fed the per-image draws
    draws = per_image_normal(x, 4, 6, seed=3)
    z0 = encoder_start(E, x, restarts=4, sigma=0.3, draws=draws)
    assert torch.equal(z0[0], E(x).detach()) and torch.allclose(z0[1:], E(x).detach() + 0.3 * draws[1:])
    proj = GANProjection(G, restarts=4, steps=0, inverter=E, seed=3).project(x)
    assert torch.equal(proj.x_proj, project(G, x, restarts=4, steps=0, z0=z0).x_proj)
    with pytest.raises(ValueError, match="draws"):
        encoder_start(E, x, restarts=2, draws=draws)
    dg = GANProjection(G, restarts=2, steps=5)
    assert torch.equal(dg(x), dg(x)) and dg.name.startswith("DefenseGAN")
    with pytest.raises(ValueError):
        GANProjection(G, restarts=0, steps=5)


def test_inverter_loss_terms(tiny) -> None:
    G, E, D = tiny
    z = torch.randn(8, 6, generator=torch.Generator().manual_seed(5))
    losses = inverter_losses(G, E, D, z, hinge_eta=0.0)
    with torch.no_grad():
        x_g, z_hat = G(z), E(G(z))
        err = (x_g - G(z_hat)).pow(2).flatten(1).sum(1)
    assert losses["semantic"].item() == pytest.approx(err.mean().item(), rel=1e-5)
    assert losses["latent"].item() == pytest.approx((z - z_hat).pow(2).sum(1).mean().item(), rel=1e-5)
    assert losses["adv"].item() > 0 and losses["disc"].item() > 0
    # the hinge: below η the semantic term is the constant η and sends no gradient to the inverter
    hinged = inverter_losses(G, E, D, z, hinge_eta=float(err.max()) + 1.0)
    assert hinged["semantic"].item() == pytest.approx(float(err.max()) + 1.0)
    grads = torch.autograd.grad(hinged["semantic"], list(E.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)


def test_train_inverter_updates_only_the_inverter_and_discriminator() -> None:
    torch.manual_seed(0)
    G, E, D = Generator(latent_dim=6, width=4).eval(), Encoder(latent_dim=6, width=4), Discriminator(width=4)
    g_before = [p.clone() for p in G.parameters()]
    d_before = [p.clone() for p in D.parameters()]
    hist = train_inverter(G, E, D, iterations=30, batch_size=16, lr=2e-3, progress=False)
    assert len(hist.latent) == 30 and not E.training
    assert all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert all(p.requires_grad for p in G.parameters())  # restored
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert sum(hist.latent[-5:]) < sum(hist.latent[:5])  # it learns to recover codes
    d_before = [p.clone() for p in D.parameters()]
    train_inverter(G, E, D, iterations=3, batch_size=8, hinge_eta=0.0, lambda_adv=0.0, lambda_semantic=1.0,
                   lambda_latent=0.0, progress=False)  # the ablation of Table 5.7 leaves D alone
    assert all(torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    with pytest.raises(ValueError):
        train_inverter(G, E, D, iterations=1, lambda_adv=-1.0, progress=False)
    assert latent_recovery_error(G, E, torch.randn(4, 6)).shape == (4,)


def test_detection_scores_and_auc(mnist_model) -> None:
    model = mnist_model[0]
    x = mnist_model[1][:6]
    s = detection_scores(model, x, x)
    assert torch.allclose(s["image"], torch.zeros(6)) and torch.allclose(s["semantic"], torch.zeros(6))
    s = detection_scores(model, x, (x + 0.1).clamp(0, 1))
    assert bool((s["image"] > 0).all()) and bool((s["semantic"] > 0).all())
    assert detection_auc(torch.tensor([0.0, 0.1]), torch.tensor([1.0, 2.0])) == 1.0
    assert detection_auc(torch.ones(4), torch.ones(4)) == 0.5
    with pytest.raises(ValueError):
        detection_auc(torch.ones(0), torch.ones(3))
    with pytest.raises(ValueError):
        detection_scores(model, x, x[:3])


def test_shipped_invgan_defends_and_detects(mnist_model, shipped) -> None:
    """A sanity check of the whole pipeline with the shipped GAN: InvGAN keeps most clean digits, the
    projection of heavily noised digits is far from the input (image-distance AUC high), and BPDA's
    straight-through gradient reaches the input."""
    model, x_test, y_test = mnist_model
    x, y = x_test[:40], y_test[:40]
    G, inverter = shipped["generator"], shipped["inverter"]
    defense = GANProjection(G, restarts=1, steps=20, inverter=inverter)
    clean = defense.project(x)
    assert accuracy(model, clean.x_proj, y) >= 0.8
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()).clamp(0, 1)
    scores_clean, scores_noisy = detection_scores(model, x, clean.x_proj), detection_scores(model, noisy, defense(noisy))
    assert detection_auc(scores_clean["image"], scores_noisy["image"]) >= 0.9
    xr = x[:4].clone().requires_grad_(True)
    Preprocessed(bpda(defense), model)(xr).sum().backward()
    assert xr.grad is not None and float(xr.grad.abs().sum()) > 0
    x_adv = on_manifold_attack(G, model, x[:4], y[:4], inverter(x[:4]).detach(), steps=5)
    assert x_adv.shape == (4, 1, 28, 28) and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_gan_projection_does_not_depend_on_the_batch(tiny) -> None:
    G, E, _ = tiny
    x = torch.rand(6, 1, 28, 28)
    for defense in (GANProjection(G, restarts=3, steps=4), GANProjection(G, restarts=2, steps=4, inverter=E)):
        whole = defense(x)
        for i in (0, 4):
            torch.testing.assert_close(defense(x[i: i + 1]), whole[i: i + 1], atol=1e-5, rtol=1e-5)


def test_on_manifold_attack_keep_best_and_margin(mnist_model, shipped) -> None:
    """The last iterate of the plain attack sits at the boundary; the best iterate with a margin kappa is
    misclassified by at least kappa wherever any iterate was, and it is never less successful."""
    model, x_test, y_test = mnist_model
    x, y = x_test[:16], y_test[:16]
    G, inverter = shipped["generator"], shipped["inverter"]
    z0 = inverter(x).detach()
    last = on_manifold_attack(G, model, x, y, z0, c=10.0, steps=40, lr=0.2)
    best = on_manifold_attack(G, model, x, y, z0, c=10.0, steps=40, lr=0.2, kappa=2.0, keep_best=True)
    with torch.no_grad():
        m_last, m_best = _margin(model(last), y), _margin(model(best), y)
    assert int((m_best < 0).sum()) >= int((m_last < 0).sum())
    assert int((m_best < -2.0 + 1e-4).sum()) >= int((m_best < 0).sum()) - 1   # fooled ones carry the margin
    assert float(best.min()) >= 0 and float(best.max()) <= 1
    with pytest.raises(ValueError):
        on_manifold_attack(G, model, x, y, z0, kappa=-1.0)


def test_on_manifold_attack_keep_best_never_worse_than_the_start(tiny) -> None:
    """With keep_best the start is an iterate too: an image already misclassified at z0 stays misclassified."""
    G, E, _ = tiny
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = torch.rand(8, 1, 28, 28)
    z0 = torch.randn(8, 6)
    with torch.no_grad():
        y = model(G(z0)).argmax(1)                       # every start is classified as y ...
        y = (y + 1) % 10                                 # ... so with these labels every start is fooled
    out = on_manifold_attack(G, model, x, y, z0, c=1.0, steps=5, lr=0.5, keep_best=True)
    with torch.no_grad():
        assert bool((model(out).argmax(1) != y).all())


def test_overpowered_attack_stays_on_the_range_within_the_budget(mnist_model, shipped) -> None:
    """Each result is G(z) for some z, within its per-image budget, and it fools the classifier more often
    than the start; a larger budget never fools it less often (same noise draws)."""
    model, x_test, y_test = mnist_model
    x, y = x_test[:24], y_test[:24]
    G, inverter = shipped["generator"], shipped["inverter"]
    start = GANProjection(G, restarts=1, steps=20, inverter=inverter, lr=0.2).project(x)
    d0 = start.residual / x[0].numel()
    fooled = []
    for extra in (0.002, 0.02):
        budget = d0 + extra
        out = overpowered_attack(G, model, x, y, start.z, eps=budget, steps=40, samples=4,
                                 generator=torch.Generator().manual_seed(0))
        assert out.shape == x.shape
        assert bool(((out - x).pow(2).flatten(1).mean(1) <= budget + 1e-6).all())
        fooled.append(int((predict_labels(model, out) != y).sum()))
    assert fooled[0] >= int((predict_labels(model, start.x_proj) != y).sum())
    assert fooled[1] >= fooled[0] and fooled[1] >= 12


def test_overpowered_attack_rejects_bad_input(tiny) -> None:
    G, _, _ = tiny
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x, y, z0 = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2]), torch.randn(3, 6)
    for kwargs in ({"eps": 0.0}, {"eps": torch.tensor([0.1, 0.1])}, {"eps": torch.tensor([0.1, -1.0, 0.1])},
                   {"samples": 0}, {"sigma": -1.0}, {"lambda_lr": 0.0}):
        with pytest.raises(ValueError):
            overpowered_attack(G, model, x, y, z0, steps=1, **kwargs)
    with pytest.raises(ValueError):
        overpowered_attack(G, model, x, y, torch.randn(3, 5), steps=1)
    with pytest.raises(TypeError):
        overpowered_attack(G, model, x, y, z0, steps=1, generator=1)


def test_overpowered_attack_results_lie_on_the_generator_range(tiny) -> None:
    """The returned images are exactly G(z) of some iterate: reprojecting from the same codes is exact
    for a tiny generator when the attack takes no step (steps=0 returns G(z0))."""
    G, _, _ = tiny
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    z0 = torch.randn(4, 6)
    x = G(z0).detach()
    out = overpowered_attack(G, model, x, torch.tensor([0, 1, 2, 3]), z0, steps=0, eps=0.01)
    torch.testing.assert_close(out, x)


def predict_labels(model, x):
    with torch.no_grad():
        return model(x).argmax(1)

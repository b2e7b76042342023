"""companion.recon: the filtered inverse, the PGA metric, the networks and the training schemes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from companion.attacks import project_l2_ball
from companion.inverse import MatrixOperator, gaussian_cs, ill_conditioned_dct_block
from companion.recon import (PerturbationNet, ReconNet, filtered_pinv, fit_linear_analytic, minmax_objective,
                             parseval_retraction, train_reconstruction, worst_case_error)


@pytest.fixture(scope="module")
def dct() -> MatrixOperator:
    return ill_conditioned_dct_block(12, 32, cond_range=(20, 1000))[0]


def linear(B: torch.Tensor) -> nn.Module:
    net = nn.Linear(B.shape[1], B.shape[0], bias=False).double()
    net.weight.data.copy_(B)
    return net


def test_filtered_pinv_is_pinv_without_perturbation(dct: MatrixOperator) -> None:
    f = filtered_pinv(dct.matrix, 1.0, 0.0)
    torch.testing.assert_close(f.B, torch.linalg.pinv(dct.matrix))
    assert f.k == 0


def test_filtered_pinv_structure(dct: MatrixOperator) -> None:
    f = filtered_pinv(dct.matrix, 1.0, 0.3)
    assert f.k >= 1
    torch.testing.assert_close(f.q[: f.k], torch.full((f.k,), f.qhat, dtype=torch.float64))
    torch.testing.assert_close(f.q[f.k:], 1 / f.s[f.k:])
    assert f.s[f.k - 1] < 1 / f.qhat <= (f.s[f.k] if f.k < len(f.s) else float("inf"))
    # the clipped count grows with the budget
    assert filtered_pinv(dct.matrix, 1.0, 0.05).k <= f.k <= filtered_pinv(dct.matrix, 1.0, 2.0).k


def test_filtered_pinv_minimises_the_objective(dct: MatrixOperator) -> None:
    A = dct.matrix
    best = filtered_pinv(A, 1.0, 0.3)
    j_best = float(minmax_objective(best.B, A, 1.0, 0.3))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = best.B + 0.01 * torch.randn(best.B.shape, generator=gen, dtype=torch.float64)
        assert float(minmax_objective(other, A, 1.0, 0.3)) >= j_best
    learned = fit_linear_analytic(A, 1.0, 0.3, steps=4000, progress=False)
    assert abs(float(minmax_objective(learned, A, 1.0, 0.3)) - j_best) / j_best < 0.01


def test_objective_matches_its_expectation_by_sampling(dct: MatrixOperator) -> None:
    A, B, lam, eps = dct.matrix, filtered_pinv(dct.matrix, 1.0, 0.3).B, 1.0, 0.3
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200_000, A.shape[1], generator=gen, dtype=torch.float64)
    _, _, vt = torch.linalg.svd(B)
    delta = eps * vt[0]                                # the worst shared perturbation
    y = x @ A.T
    sampled = ((y @ B.T - x) ** 2).sum(1).mean() + lam * (((y + delta) @ B.T - x) ** 2).sum(1).mean()
    assert abs(float(sampled) / float(minmax_objective(B, A, lam, eps)) - 1) < 0.02


def test_pga_finds_the_exact_worst_case_of_a_linear_map(dct: MatrixOperator) -> None:
    B = torch.linalg.pinv(dct.matrix)
    # at x = 0 the worst case is ε‖B‖₂ exactly
    zero = torch.zeros(3, dct.n, dtype=torch.float64)
    wc = worst_case_error(linear(B), dct, zero, 0.1, steps=100)
    torch.testing.assert_close(wc, torch.full((3,), 0.1 * float(torch.linalg.matrix_norm(B, 2)), dtype=torch.float64),
                               rtol=1e-3, atol=0)
    # in general it lies between the clean error and the triangle-inequality bound
    x = torch.randn(50, dct.n, dtype=torch.float64)
    Bf = filtered_pinv(dct.matrix, 1.0, 0.3).B
    clean = worst_case_error(linear(Bf), dct, x, 0.0)
    wc = worst_case_error(linear(Bf), dct, x, 0.3, steps=20)
    upper = clean + 0.3 * torch.linalg.matrix_norm(Bf, 2)
    assert torch.all(wc >= clean) and torch.all(wc <= upper + 1e-9)
    assert torch.all(wc >= 0.3 * torch.linalg.matrix_norm(Bf, 2) - clean)   # reverse triangle inequality


def test_project_l2_ball() -> None:
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out = project_l2_ball(v, 1.0)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_perturbation_net_respects_the_budget() -> None:
    g = PerturbationNet(20, 0.5)
    d = g(100 * torch.randn(8, 20))
    assert d.shape == (8, 20) and torch.all(d.norm(dim=1) <= 0.5 + 1e-6)


def test_parseval_retraction_moves_singular_values_towards_one() -> None:
    layer = nn.Linear(10, 6)
    with torch.no_grad():
        layer.weight.mul_(5.0)
    before = torch.linalg.svdvals(layer.weight.detach())
    parseval_retraction(layer, 0.01)
    after = torch.linalg.svdvals(layer.weight.detach())
    torch.testing.assert_close(after, (1.01 * before - 0.01 * before**3).abs().sort(descending=True).values, rtol=1e-4, atol=1e-5)
    conv = nn.Conv2d(2, 3, 3)
    for _ in range(300):
        parseval_retraction(conv, 0.3)
    torch.testing.assert_close(torch.linalg.svdvals(conv.weight.view(3, -1)), torch.ones(3), atol=1e-3, rtol=0)


def test_recon_net_starts_at_the_pseudo_inverse() -> None:
    op = gaussian_cs(50, (1, 8, 8))
    net = ReconNet(op, channels=4)
    y = torch.randn(3, 50)
    torch.testing.assert_close(net.initial(y).view(3, 1, 8, 8), op.A_dagger(y), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="images"):
        ReconNet(gaussian_cs(5, (64,)))


@pytest.mark.parametrize("scheme", ["plain", "weight_decay", "parseval", "minmax", "pga"])
def test_every_scheme_trains_and_lowers_the_loss(scheme: str) -> None:
    op = gaussian_cs(32, (1, 8, 8))
    x = torch.rand(96, 1, 8, 8)
    net = ReconNet(op, channels=4)
    hist = train_reconstruction(net, op, x, scheme=scheme, epochs=3, batch_size=32, eps=0.5, progress=False)
    assert len(hist.loss) == 3 and hist.loss[-1] < hist.loss[0]
    assert not net.training
    if scheme in ("minmax", "pga"):
        assert len(hist.attacker_error) == 3


def test_training_validation() -> None:
    op = gaussian_cs(32, (1, 8, 8))
    net = ReconNet(op, channels=4)
    with pytest.raises(ValueError, match="unknown scheme"):
        train_reconstruction(net, op, torch.rand(4, 1, 8, 8), scheme="adversarial")
    with pytest.raises(ValueError, match="NaN"):
        train_reconstruction(net, op, torch.full((4, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=">= 0"):
        worst_case_error(net, op, torch.rand(2, 1, 8, 8), -1.0)


def test_filtered_pinv_on_a_wide_matrix_with_a_null_space() -> None:
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    f = filtered_pinv(A, 1.0, 0.5)
    assert f.B.shape == (16, 8) and f.k >= 1
    # B maps into the row space of A (nothing on the null space)
    projector = torch.linalg.pinv(A) @ A
    torch.testing.assert_close(projector @ f.B, f.B)
    j_best = float(minmax_objective(f.B, A, 1.0, 0.5))
    for _ in range(20):
        other = f.B + 0.01 * torch.randn(f.B.shape, generator=gen, dtype=torch.float64)
        assert float(minmax_objective(other, A, 1.0, 0.5)) >= j_best
    with pytest.raises(ValueError, match="zero"):
        filtered_pinv(torch.zeros(3, 3), 1.0, 0.5)
    with pytest.raises(ValueError, match="shape"):
        minmax_objective(torch.zeros(3, 3), A, 1.0, 0.5)


def test_pga_returns_the_perturbation_of_its_best_iterate() -> None:
    from companion.recon import pga_perturbation, reconstruction_error

    op = gaussian_cs(32, (1, 8, 8))
    net = ReconNet(op, channels=4)
    x = torch.rand(6, 1, 8, 8)
    y = op.A(x)
    delta, best = pga_perturbation(net, y, x, 0.7, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.all(delta.norm(dim=1) <= 0.7 + 1e-5)
    with torch.no_grad():
        torch.testing.assert_close(reconstruction_error(net, y + delta, x), best)


def test_parseval_instability_and_attacker_misuse_are_reported() -> None:
    from companion.recon import check_parseval_stable

    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(100 * torch.eye(4))
    with pytest.raises(ValueError, match="diverges"):
        check_parseval_stable(layer, 3e-4)
    op = gaussian_cs(32, (1, 8, 8))
    net = ReconNet(op, channels=4)
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(ValueError, match="> 0"):
        train_reconstruction(net, op, x, scheme="minmax", eps=-1.0, progress=False)
    with pytest.raises(ValueError, match="only used by scheme='minmax'"):
        train_reconstruction(net, op, x, scheme="plain", attacker=PerturbationNet(32, 1.0), progress=False)
    with pytest.raises(ValueError, match="budget"):
        train_reconstruction(net, op, x, scheme="minmax", eps=0.5, attacker=PerturbationNet(32, 1.0), progress=False)
    with pytest.raises(ValueError, match=">= 0"):
        project_l2_ball(torch.ones(2, 3), -0.1)


def test_worst_case_error_accepts_sinogram_shaped_measurements() -> None:
    from companion.ct import ParallelBeam, uniform_angles
    from companion.recon import pga_perturbation

    op = ParallelBeam(16, uniform_angles(8))

    class FBP(nn.Module):
        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return op.fbp(y)

    x = torch.rand(3, 1, 16, 16)
    y = op.A(x)
    assert y.shape == (3, 1, 16, 8)
    delta, best = pga_perturbation(FBP(), y, x, 2.0, steps=5, generator=torch.Generator().manual_seed(0))
    assert delta.shape == y.shape and torch.all(delta.flatten(1).norm(dim=1) <= 2.0 + 1e-4)
    clean = worst_case_error(FBP(), op, x, 0.0)
    assert torch.all(worst_case_error(FBP(), op, x, 2.0, steps=5) > clean)


# --------------------------------------------------------------------------------------------------
# The strength audit, the exact linear worst case, attacker networks, tuning (issue 19)
# --------------------------------------------------------------------------------------------------
def test_linear_worst_case_matches_a_dense_search_on_the_circle() -> None:
    import math

    from companion.recon import linear_worst_case
    gen = torch.Generator().manual_seed(3)
    angles = torch.linspace(0, 2 * math.pi, 100_001, dtype=torch.float64)
    for eps in (0.2, 0.7, 3.0):
        B = torch.randn(3, 2, generator=gen, dtype=torch.float64)
        r = torch.randn(5, 3, generator=gen, dtype=torch.float64)
        circle = eps * torch.stack([angles.cos(), angles.sin()], 1)
        brute = (r[:, None, :] + (circle @ B.T)[None]).norm(dim=2).amax(1)
        exact = linear_worst_case(B, r, eps)
        assert torch.all(exact >= brute - 1e-9)
        torch.testing.assert_close(exact, brute, rtol=1e-7, atol=0)


def test_linear_worst_case_special_cases() -> None:
    from companion.recon import linear_worst_case
    B = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # r = 0: ε times the largest singular value
    torch.testing.assert_close(linear_worst_case(B, torch.zeros(2, 6, dtype=torch.float64), 0.3),
                               torch.full((2,), 0.3 * float(torch.linalg.matrix_norm(B, 2)), dtype=torch.float64))
    # ε = 0: the residual itself
    r = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(linear_worst_case(B, r, 0.0), r.norm(dim=1))
    # the hard case: Bᵀr has no component along the top singular direction
    D = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    r = torch.tensor([[0.0, 0.1]], dtype=torch.float64)
    # best δ: ε along e1 (gain 2) plus what is left along e2; worst case sqrt(4 ε² + ...) by hand:
    # maximise (2 d1)² + (0.1 + d2)² on d1² + d2² = 1 -> d2 = 0.1/3, value² = 4 - 4 d2² + (0.1 + d2)²
    d2 = 0.1 / 3
    expected = (4 - 4 * d2**2 + (0.1 + d2) ** 2) ** 0.5
    assert abs(float(linear_worst_case(D, r, 1.0)) - expected) < 1e-9
    with pytest.raises(ValueError):
        linear_worst_case(B, torch.zeros(2, 5), 0.3)


def test_strong_pga_reaches_the_exact_worst_case_of_an_affine_map(dct: MatrixOperator) -> None:
    from companion.recon import linear_worst_case, pga_convergence
    Bf = filtered_pinv(dct.matrix, 1.0, 0.3).B
    x = torch.randn(40, dct.n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = linear_worst_case(Bf, x @ (Bf @ dct.matrix).T - x, 0.3)
    curve = pga_convergence(linear(Bf), dct, x, 0.3, steps=100, restarts=2)
    assert curve.shape == (101, 2, 40)
    assert torch.all(curve[1:] >= curve[:-1])                          # best so far never falls
    found = curve[-1].amax(0)
    assert torch.all(found <= exact * (1 + 1e-9))                      # a lower bound ...
    # ... that reaches the maximum, up to the odd start caught by the one other local maximum of a
    # trust-region problem
    shortfall = (exact - found) / exact
    assert float(shortfall.mean()) < 1e-4 and float(shortfall.max()) < 3e-3
    strong = worst_case_error(linear(Bf), dct, x, 0.3, steps=100, restarts=2, start="sphere",
                              step_size=0.075, schedule="cosine")
    assert float(((exact - strong) / exact).mean()) < 1e-4


def test_pga_options_keep_the_default_and_check_their_input(dct: MatrixOperator) -> None:
    from companion.recon import pga_perturbation
    Bf = filtered_pinv(dct.matrix, 1.0, 0.3).B
    x = torch.randn(8, dct.n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = dct.A(x)
    plain = pga_perturbation(linear(Bf), y, x, 0.3, steps=7, generator=torch.Generator().manual_seed(0))
    explicit = pga_perturbation(linear(Bf), y, x, 0.3, steps=7, generator=torch.Generator().manual_seed(0),
                                start="centre", step_size=2.5 * 0.3 / 7, schedule="constant")
    torch.testing.assert_close(plain[1], explicit[1], rtol=0, atol=0)
    history: list[torch.Tensor] = []
    delta, best = pga_perturbation(linear(Bf), y, x, 0.3, steps=7, generator=torch.Generator().manual_seed(0),
                                   start="sphere", history=history)
    assert len(history) == 8 and torch.equal(history[-1], best)
    assert torch.all(delta.norm(dim=1) <= 0.3 + 1e-9)
    with pytest.raises(ValueError):
        pga_perturbation(linear(Bf), y, x, 0.3, steps=5, generator=torch.Generator(), start="origin")
    with pytest.raises(ValueError):
        pga_perturbation(linear(Bf), y, x, 0.3, steps=5, generator=torch.Generator(), schedule="linear")


def test_shared_perturbation_is_one_delta_inside_the_ball() -> None:
    from companion.recon import SharedPerturbation
    g = SharedPerturbation(5, 0.4)
    with torch.no_grad():
        g.delta.copy_(torch.ones(1, 5))
    out = g(torch.randn(3, 5))
    assert out.shape == (3, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.full((3,), 0.4))
    assert torch.equal(out[0], out[2])


def test_normalised_samples_have_exact_moments() -> None:
    from companion.recon import normalised_samples
    x = normalised_samples(500, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(x.T @ x / 500, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_linear_minmax_game_with_an_attacker_network_clips_the_top_gain(dct: MatrixOperator) -> None:
    from companion.recon import SharedPerturbation, normalised_samples
    A = dct.matrix
    x = normalised_samples(2048, dct.n, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = linear(A.T.clone())
    train_reconstruction(net, dct, x, scheme="minmax", attacker=SharedPerturbation(dct.m, 0.3).double(), epochs=40,
                         batch_size=128, lr=1e-2, eps=0.3, attacker_lr=0.02, attacker_steps=5, lr_decay=True,
                         progress=False)
    B = net.weight.detach()
    closed = filtered_pinv(A, 1.0, 0.3)
    j = lambda M: float(minmax_objective(M, A, 1.0, 0.3))   # noqa: E731
    assert j(B) < 1.15 * j(closed.B) < 0.1 * j(torch.linalg.pinv(A))   # near the optimum, far from A⁺
    top = float(torch.linalg.matrix_norm(B, 2))
    assert abs(top - closed.qhat) / closed.qhat < 0.1                   # the top gain is clipped near q̂


def test_train_attacker_leaves_the_network_alone_and_raises_the_error() -> None:
    from companion.recon import reconstruction_error, train_attacker
    op = gaussian_cs(32, (1, 8, 8), seed=0)
    x = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = ReconNet(op, 4)
    train_reconstruction(net, op, x, scheme="plain", epochs=2, batch_size=32, progress=False)
    before = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(1)
    g = PerturbationNet(op.m, 0.5, hidden=32)
    y = op.A(x)
    with torch.no_grad():
        err0 = float(reconstruction_error(net, y + g(y), x).mean())
    hist = train_attacker(net, op, x, g, epochs=10, batch_size=32, lr=3e-3, progress=False)
    with torch.no_grad():
        err1 = float(reconstruction_error(net, y + g(y), x).mean())
    assert err1 > err0 and len(hist.loss) == 10
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError):
        train_attacker(net, op, x[:0], g, progress=False)


def test_validation_score_and_tuning() -> None:
    from companion.recon import reconstruction_error, robust_validation_score, tune_regulariser
    op = gaussian_cs(32, (1, 8, 8), seed=0)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net = ReconNet(op, 4)
    with torch.no_grad():
        clean = reconstruction_error(net, op.A(x), x)
    # ε = 0: the worst case is the clean error, so the score is (1 + λ) mean ‖f(y) − x‖²
    assert abs(robust_validation_score(net, op, x, 0.0, lam=2.0) - 3 * float((clean**2).mean())) < 1e-5
    assert robust_validation_score(net, op, x, 0.5, lam=1.0) > robust_validation_score(net, op, x, 0.0, lam=1.0)
    make = lambda: ReconNet(op, 4)   # noqa: E731
    best, scores = tune_regulariser(make, op, x[:48], x[48:], "weight_decay", [1e-4, 1e-1], epochs=1)
    assert best in (1e-4, 1e-1) and set(scores) == {1e-4, 1e-1} and scores[best] == min(scores.values())
    # Parseval values where the retraction diverges are skipped; all diverging is an error
    sigma = float(torch.linalg.matrix_norm(op.pinv().double(), 2))
    too_big = 3.0 / sigma**2
    best, scores = tune_regulariser(make, op, x[:48], x[48:], "parseval", [1e-4, too_big], epochs=1)
    assert set(scores) == {1e-4} and best == 1e-4
    with pytest.raises(ValueError):
        tune_regulariser(make, op, x[:48], x[48:], "parseval", [too_big], epochs=1)
    with pytest.raises(ValueError):
        tune_regulariser(make, op, x[:48], x[48:], "dropout", [0.1], epochs=1)

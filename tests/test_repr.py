"""RePr (companion.repr): the overlap score, masking, re-initialisation, rankings and the schedule."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion.repr import (RANKINGS, RePrSchedule, VanillaConvNet, ensemble_step, filter_importance,
                            make_optimizer, member_accuracy, ortho_scores, ortho_sum, orthogonal_reinit,
                            select_drops, train_repr)


def tiny(seeds=(0,), **kw) -> VanillaConvNet:
    return VanillaConvNet(depth=kw.pop("depth", 3), width=kw.pop("width", 6), init_seeds=seeds,
                          input_size=kw.pop("input_size", 8), **kw)


def data(n: int = 48, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


# ---------------------------------------------------------------- the overlap score (eq. 5.1-5.2)

def test_ortho_score_is_zero_for_orthogonal_filters_and_maximal_for_identical_ones() -> None:
    q = torch.linalg.qr(torch.randn(9, 9, dtype=torch.float64))[0][:5] * 3.0    # 5 orthogonal rows, any norm
    assert torch.allclose(ortho_scores(q), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    same = torch.randn(1, 9).repeat(4, 1) * torch.tensor([[1.0], [2.0], [0.5], [-1.0]])
    assert torch.allclose(ortho_scores(same), torch.full((4,), 3 / 4), atol=1e-6)       # (J-1)/J, sign ignored
    # the author's code: signed mean, then absolute value; +f and -f cancel
    pair = torch.stack([same[0], -same[0], same[0]])
    assert torch.allclose(ortho_scores(pair, aggregate="abs_of_signed_mean"), torch.tensor([0.0, 1.0, 0.0]),
                          atol=1e-6)
    assert ortho_scores(same, normalise="frobenius").shape == (4,)


def test_ortho_score_ranks_the_overlapping_filter_highest_and_is_batched() -> None:
    w = torch.eye(6)[:4].clone()
    w[3] = w[0] + 0.1 * w[1]                       # filter 3 nearly repeats filter 0
    o = ortho_scores(w)
    assert o.argmax() == 3 or o.argmax() == 0
    assert o[2] < o[3] and o[2] < o[0]
    stacked = ortho_scores(torch.stack([w, w]))
    assert stacked.shape == (2, 4) and torch.equal(stacked[0], stacked[1])


@pytest.mark.parametrize("bad", [torch.randn(1, 9), torch.randn(9)])
def test_ortho_score_needs_two_filters(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="two filters"):
        ortho_scores(bad)


def test_ortho_score_rejects_unknown_options() -> None:
    with pytest.raises(ValueError):
        ortho_scores(torch.randn(3, 4), normalise="l1")
    with pytest.raises(ValueError):
        ortho_scores(torch.randn(3, 4), aggregate="max")


# ---------------------------------------------------------------- the network and its members

def test_members_train_exactly_like_separate_networks() -> None:
    x, y = data()
    pair, single = tiny((3, 5)), tiny((5,))
    for model in (pair, single):
        opt = make_optimizer("momentum", model.parameters(), lr=0.05, weight_decay=1e-3)
        step = ensemble_step(model, opt, x, y)
        for i in range(4):
            step(torch.arange(12 * i, 12 * i + 12))
    for i in range(3):
        assert torch.allclose(pair.filters(i)[1], single.filters(i)[0], atol=1e-5)
    assert torch.allclose(pair.fc_weight[1], single.fc_weight[0], atol=1e-5)


def test_same_seed_members_start_identical() -> None:
    m = tiny((7, 7, 8))
    assert torch.equal(m.filters(1)[0], m.filters(1)[1])
    assert not torch.equal(m.filters(1)[0], m.filters(1)[2])


def test_dropped_filters_output_zero_through_momentum_and_weight_decay() -> None:
    x, y = data()
    m = tiny((0, 0))
    opt = make_optimizer("momentum", m.parameters(), lr=0.1, weight_decay=0.01)
    step = ensemble_step(m, opt, x, y)
    step(torch.arange(16))                         # builds momentum for every filter
    m.mask(1)[0, 2] = 0.0
    before = m.filters(1)[0, 2].clone()
    for i in range(3):
        step(torch.arange(16 * i, 16 * i + 16))
    assert not torch.equal(m.filters(1)[0, 2], before)     # momentum and weight decay still move the weights ...
    acts: list[list[torch.Tensor]] = []
    m(x, activations=acts)
    assert torch.count_nonzero(acts[1][0][:, 2]) == 0      # ... yet the dropped filter outputs nothing
    assert torch.count_nonzero(acts[1][1][:, 2]) > 0       # the other member's filter is untouched


@pytest.mark.parametrize("kw, match", [(dict(kernel=2), "odd"), (dict(input_size=12), "divisible"),
                                       (dict(width=0), "width")])
def test_network_rejects_bad_shapes(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_member_accuracy_matches_argmax() -> None:
    x, y = data()
    m = tiny((1, 2))
    with torch.no_grad():
        expected = (m(x).argmax(-1) == y[:, None]).float().mean(0)
    assert torch.equal(member_accuracy(m, x, y, batch_size=10), expected)


# ---------------------------------------------------------------- rankings

@pytest.mark.parametrize("ranking", RANKINGS)
def test_every_ranking_gives_one_finite_score_per_filter(ranking: str) -> None:
    m = tiny((0, 1))
    imp = filter_importance(m, ranking, data=data(), generator=torch.Generator().manual_seed(0))
    assert len(imp) == 3 and all(s.shape == (2, 6) and torch.isfinite(s).all() for s in imp)


def test_oracle_is_the_loss_rise_of_switching_one_filter_off() -> None:
    x, y = data()
    m = tiny((4,))
    imp = filter_importance(m, "oracle", data=(x, y))
    with torch.no_grad():
        base = F.cross_entropy(m(x)[:, 0], y)
        m.mask(2)[0, 3] = 0
        off = F.cross_entropy(m(x)[:, 0], y)
        m.mask(2)[0, 3] = 1
    assert torch.isclose(imp[2][0, 3], off - base, atol=1e-6)
    assert torch.equal(m.mask(2), torch.ones(1, 6))          # masks restored


def test_hessian_ranking_approaches_the_exact_diagonal() -> None:
    x, y = data(16, 8)
    m = tiny((2,), depth=1, width=2)
    w = m.convs[0].weight
    loss = F.cross_entropy(m(x)[:, 0], y)
    g = torch.autograd.grad(loss, w, create_graph=True)[0].flatten()
    exact = torch.stack([torch.autograd.grad(g[i], w, retain_graph=True)[0].flatten()[i] for i in range(len(g))])
    obd = (0.5 * exact * w.detach().flatten() ** 2).view(2, -1).sum(1)
    est = filter_importance(m, "hessian", data=(x, y), generator=torch.Generator().manual_seed(0),
                            hessian_probes=3000)[0][0]
    assert torch.allclose(est, obd, rtol=0.1, atol=1e-4)


def test_data_rankings_need_data_and_random_needs_a_generator() -> None:
    m = tiny()
    with pytest.raises(ValueError, match="data"):
        filter_importance(m, "taylor")
    with pytest.raises(ValueError, match="generator"):
        filter_importance(m, "random")
    with pytest.raises(ValueError):
        filter_importance(m, "magnitude")


# ---------------------------------------------------------------- dropping and re-initialising

def test_select_drops_ranks_globally_caps_layers_and_skips_excluded_ones() -> None:
    imp = [torch.zeros(1, 6), torch.arange(6.0)[None] + 100, torch.arange(6.0)[None]]
    drops = select_drops(imp, 0.5, layers=[1, 2], max_layer_share=0.5)
    assert drops[0].sum() == 0                      # layer 0 is not ranked, however low its scores
    assert drops[2].sum() == 3 and drops[2][0, :3].all()   # layer 2 holds the 6 lowest but gives at most 3
    assert drops[1].sum() == 3 and drops[1][0, :3].all()
    with pytest.raises(ValueError, match="at most"):
        select_drops(imp, 0.9, layers=[1, 2], max_layer_share=0.5)
    with pytest.raises(ValueError, match="fraction"):
        select_drops(imp, 0.0, layers=[1])
    with pytest.raises(ValueError, match="layers"):
        select_drops(imp, 0.3, layers=[3])


def test_orthogonal_reinit_is_orthogonal_rescaled_and_resets_state() -> None:
    x, y = data()
    m = VanillaConvNet(depth=2, width=8, init_seeds=(0, 1), input_size=8, batchnorm=True)
    opt = make_optimizer("adam", m.parameters(), lr=1e-2)
    ensemble_step(m, opt, x, y)(torch.arange(16))
    idx = torch.tensor([1, 4])
    m.mask(1)[1, idx] = 0
    previous = m.filters(1)[1, idx].clone()
    other_member = m.filters(1)[0].clone()
    orthogonal_reinit(m, 1, 1, idx, previous, torch.Generator().manual_seed(0), opt)
    w = m.filters(1)[1].detach()
    kept = w[[0, 2, 3, 5, 6, 7]]
    new = w[idx]
    cos = F.normalize(new, dim=1) @ F.normalize(torch.cat([kept, previous, new]), dim=1).T
    assert cos[:, :-2].abs().max() < 1e-5                        # ⊥ kept filters and their own old values
    assert torch.allclose(cos[:, -2:], torch.eye(2), atol=1e-5)  # and orthonormal among themselves ...
    assert torch.allclose(new.norm(dim=1), kept.norm(dim=1).mean().expand(2), rtol=1e-5)   # ... at the kept norm
    rows = 8 + idx
    assert torch.equal(m.mask(1)[1], torch.ones(8))
    assert torch.count_nonzero(m.convs[1].bias[rows]) == 0
    assert torch.equal(m.norms[1].weight[rows].detach(), torch.ones(2))
    for p in (m.convs[1].weight, m.convs[1].bias):
        assert torch.count_nonzero(opt.state[p]["exp_avg"][rows]) == 0
        assert torch.count_nonzero(opt.state[p]["exp_avg_sq"][rows]) == 0
        assert torch.count_nonzero(opt.state[p]["exp_avg"][:8]) > 0        # the other member keeps its state
    assert torch.equal(m.filters(1)[0], other_member)


@pytest.mark.parametrize("layer", [1, 2])
def test_returning_filters_start_silent_unless_downstream_is_kept(layer: int) -> None:
    x, _ = data()
    idx = torch.tensor([0, 3])
    outputs = {}
    for downstream in ("zero", "keep"):
        m = tiny((0, 1))
        m.mask(layer)[0, idx] = 0
        with torch.no_grad():
            sub = m(x)
        orthogonal_reinit(m, layer, 0, idx, m.filters(layer)[0, idx].clone(), torch.Generator().manual_seed(0),
                          downstream=downstream)
        with torch.no_grad():
            outputs[downstream] = (sub, m(x))
    sub, back = outputs["zero"]
    assert torch.allclose(back, sub, atol=1e-6)     # the network computes what the sub-network did
    sub, back = outputs["keep"]
    assert not torch.allclose(back[:, 0], sub[:, 0], atol=1e-3)
    assert torch.allclose(back[:, 1], sub[:, 1])     # the other member is untouched either way


def test_reinit_refuses_more_filters_than_dimensions() -> None:
    m = tiny((0,), width=12)                        # first layer: 9-dimensional filters
    with pytest.raises(ValueError, match="orthogonally"):
        orthogonal_reinit(m, 0, 0, torch.arange(10), m.filters(0)[0, :10], torch.Generator())


# ---------------------------------------------------------------- the schedule

def test_schedule_drops_retrains_and_restores_only_the_repr_members() -> None:
    x, y = data(64)
    m = tiny((0, 0))
    sched = RePrSchedule(m, [None, "ortho"], (x, y), s1=2, s2=1, cycles=2, fraction=0.25)
    assert sched.drop_epochs == [2, 5]
    hist = train_repr(m, x, y, sched, epochs=7, lr=0.05, batch_size=16, progress=False)
    assert [ev.epoch for ev in sched.events] == [2, 5]
    for ev in sched.events:
        counts = ev.per_layer()
        assert counts[0].sum() == 0                             # the standard member never loses a filter
        assert counts[1, 0] == 0 and counts[1].sum() == 3       # 25 % of the 12 ranked filters, not layer 0
    assert hist.epochs["pruned"] == [0, 0, 1, 0, 0, 1, 0]
    assert all(torch.equal(m.mask(i), torch.ones(2, 6)) for i in range(3))
    assert len(hist.epochs["ortho_sum_1"]) == 7
    assert torch.allclose(ortho_sum(m), torch.tensor([hist.epochs["ortho_sum_0"][-1],
                                                      hist.epochs["ortho_sum_1"][-1]]), atol=1e-5)


def test_schedule_and_training_reject_bad_settings() -> None:
    x, y = data()
    m = tiny((0, 1))
    with pytest.raises(ValueError, match="one ranking"):
        RePrSchedule(m, ["ortho"], (x, y))
    with pytest.raises(ValueError):
        RePrSchedule(m, ["ortho", "norm"], (x, y))
    sched = RePrSchedule(m, [None, "ortho"], (x, y), s1=3, s2=2, cycles=2)
    with pytest.raises(ValueError, match="need 10 epochs"):
        train_repr(m, x, y, sched, epochs=8)
    with pytest.raises(ValueError, match="another model"):
        train_repr(tiny((0, 1)), x, y, sched, epochs=12)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("rmsprop", m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="downstream"):
        orthogonal_reinit(m, 1, 0, torch.tensor([0]), m.filters(1)[0, :1], torch.Generator(), downstream="random")


def test_annealing_lowers_the_learning_rate_once() -> None:
    x, y = data(32)
    m = tiny((0,))
    sched = RePrSchedule(m, [None], (x, y), cycles=0)
    hist = train_repr(m, x, y, sched, epochs=3, lr=0.05, anneal_at=2, batch_size=16, progress=False)
    assert len(hist.epochs["test_accuracy_0"]) == 3
    assert sched.optimizer is not None and sched.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)

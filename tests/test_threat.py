"""companion.threat: one threat model for every defense (Wilson intervals, budgets, worst case, caching)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from companion.attacks import fgsm, perturbation_sizes, pgd
from companion.threat import Attack, Defense, accuracy_with_interval, evaluate, wilson_interval, within_budget


class Linear(nn.Module):
    """A fixed linear classifier on 4 × 4 images: class 1 when the mean pixel is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - m, m - 0.5], 1) * 20


def data(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    levels = torch.linspace(0.05, 0.95, n)
    x = levels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    return x, (levels > 0.5).long()


def test_wilson_interval_matches_the_closed_form_and_stays_in_the_unit_interval() -> None:
    lo, hi = wilson_interval(8, 10)
    p, n, z = 0.8, 10, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0, 30)[0] == 0.0 and wilson_interval(30, 30)[1] == 1.0
    assert wilson_interval(0, 30)[1] > 0.05          # 0 of 30 is not "certainly 0 %"
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_accuracy_with_interval_is_the_mean_and_its_wilson_interval() -> None:
    correct = torch.tensor([True] * 8 + [False] * 2)
    assert accuracy_with_interval(correct) == pytest.approx((0.8, *wilson_interval(8, 10)))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        accuracy_with_interval(torch.tensor([], dtype=torch.bool))


def test_perturbation_sizes_per_image() -> None:
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0] += 0.5                                    # linf 0.5, l2 1.0
    x_adv[1, 0, 0, 0] = -0.3                           # linf 0.3, l2 0.3
    assert perturbation_sizes(x, x_adv, "linf").tolist() == pytest.approx([0.5, 0.3])
    assert perturbation_sizes(x, x_adv, "l2").tolist() == pytest.approx([1.0, 0.3])
    with pytest.raises(ValueError, match="shape"):
        perturbation_sizes(x, x_adv[:1], "l2")


def test_within_budget_keeps_only_examples_inside_the_ball() -> None:
    x = torch.zeros(3, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0] += 0.1
    x_adv[1] += 0.5
    x_adv[2, 0, 0, 0] = 0.3
    out = within_budget(x, x_adv, 0.3, "linf")
    assert torch.equal(out[0], x_adv[0]) and torch.equal(out[1], x[1]) and torch.equal(out[2], x_adv[2])
    out2 = within_budget(x, x_adv, 0.25, "l2")        # l2 sizes 0.2, 1.0, 0.3
    assert torch.equal(out2[0], x_adv[0]) and torch.equal(out2[1], x[1]) and torch.equal(out2[2], x[2])
    with pytest.raises(ValueError, match="norm"):
        within_budget(x, x_adv, 0.3, "l1")


def test_adaptive_attack_breaks_a_masking_transform_that_fools_the_unaware_one() -> None:
    """A transform that rounds to {0.25, 0.75} hides the boundary: FGSM on the bare classifier crosses it,
    but rounding pushes most images back; BPDA through the rounding still moves every image across."""
    torch.manual_seed(0)
    model = Linear()
    x, y = data()

    def rounding(v: torch.Tensor) -> torch.Tensor:
        return torch.where(v > 0.5, torch.full_like(v, 0.75), torch.full_like(v, 0.25))

    defenses = [Defense("none", model), Defense("rounding", model, rounding)]
    attacks = [Attack("FGSM", lambda m, a, b: fgsm(m, a, b, 0.5), 0.5),
               Attack("adaptive", lambda m, a, b: pgd(m, a, b, 0.5, steps=10), 0.5, adaptive=True)]
    table = evaluate(defenses, attacks, x, y, progress=False)
    assert table.accuracy("none") == 1.0 and table.accuracy("rounding") == 1.0
    assert table.accuracy("none", "FGSM") == 0.0
    assert table.accuracy("rounding", "adaptive") <= table.accuracy("rounding", "FGSM")
    worst = table.worst_case("rounding", "linf", 0.5)
    assert torch.equal(worst, table.correct["rounding"]["FGSM"] & table.correct["rounding"]["adaptive"])
    assert table.budgets() == [("linf", 0.5)]


def test_unaware_attacks_are_crafted_once_per_classifier_and_budgets_are_enforced() -> None:
    model = Linear()
    x, y = data(10)
    calls = []

    def too_far(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return (1 - a).clamp(0, 1)                      # fools everything, at ℓ∞ 0.1 or farther

    defenses = [Defense("none", model), Defense("identity", model, lambda v: v)]
    table = evaluate(defenses, [Attack("far", too_far, 0.05)], x, y, progress=False)
    assert len(calls) == 1                               # shared by the two defenses
    assert table.accuracy("identity", "far") == 1.0      # every example fell back to its clean image
    assert float(table.distances["none"]["far"].max()) == 0.0


def test_only_restricts_an_attack_and_worst_case_needs_a_run() -> None:
    model = Linear()
    x, y = data(6)
    attacks = [Attack("a", lambda m, a, b: a, 0.1, only=("second",)),
               Attack("unbounded", lambda m, a, b: a, 0.0, norm="none")]
    table = evaluate([Defense("first", model), Defense("second", model, lambda v: v)], attacks, x, y,
                     progress=False)
    assert "a" not in table.correct["first"] and "a" in table.correct["second"]
    with pytest.raises(KeyError):
        table.worst_case("first", "linf", 0.1)
    assert table.budgets() == [("linf", 0.1)]            # the unbounded attack is in no worst case


def test_exact_attacks_run_the_defense_itself_in_their_forward_pass() -> None:
    model = Linear()
    x, y = data(6)
    seen = []

    def named(tag: str):
        def transform(v: torch.Tensor) -> torch.Tensor:
            seen.append(tag)
            return v
        return transform

    def probe(m, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m(a)                                              # one forward pass through the attack model
        return a

    defense = Defense("d", model, named("defense"), attack_transform=named("cheap"))
    evaluate([defense], [Attack("cheap", probe, 0.1, adaptive=True),
                         Attack("exact", probe, 0.1, adaptive=True, exact=True)], x, y, progress=False)
    assert seen == ["defense", "cheap", "defense", "defense", "defense"]   # clean; cheap + its eval; exact + eval
    with pytest.raises(ValueError, match="adaptive attacks only"):
        Attack("e", probe, 0.1, exact=True)


def test_batch_dependent_defense_sees_the_whole_set_and_votes_take_the_majority() -> None:
    model = Linear()
    x, y = data(12)
    sizes = []

    def batch_mean(v: torch.Tensor) -> torch.Tensor:
        sizes.append(len(v))
        return v

    Defense("batch", model, batch_mean, batch_dependent=True).predict(x, batch_size=5)
    assert sizes == [12]
    flips = iter([True, False, False] * 12)

    def sometimes_flip(v: torch.Tensor) -> torch.Tensor:
        return 1 - v if next(flips) else v

    voted = Defense("vote", model, sometimes_flip, votes=3, randomised=True).predict(x)
    assert torch.equal(voted, y)


def test_bad_input_gives_clear_errors() -> None:
    model = Linear()
    x, y = data(4)
    with pytest.raises(ValueError, match="need a transform"):
        Defense("x", model, votes=3)
    with pytest.raises(TypeError, match="callable"):
        Defense("x", model, transform=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm"):
        Attack("a", lambda m, a, b: a, 0.1, norm="l1")
    with pytest.raises(ValueError, match="unique"):
        evaluate([Defense("d", model), Defense("d", model)], [], x, y, progress=False)
    with pytest.raises(ValueError, match="reserved"):
        evaluate([Defense("d", model)], [Attack("clean", lambda m, a, b: a, 0.1)], x, y, progress=False)

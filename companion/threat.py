"""Every defense under one threat model: the same images, attacks and budgets, the worst case per image.

A defense is a classifier, an optional input transform in front of it and the rule that turns the
pipeline into a label (:class:`Defense`). An attack (:class:`Attack`) is either *defense-unaware*,
crafted on the classifier alone and then passed through the defense, or *adaptive*, crafted on the
whole pipeline as an attacker who knows the defense would: the transform replaced by its BPDA
approximation in the backward pass (Athalye et al. 2018) and, for a randomised transform, the prediction
averaged over draws (EOT). :func:`evaluate` runs every attack on every defense and returns a
:class:`ThreatTable` of per-image outcomes: accuracies with Wilson intervals, the worst case per image
over the attacks of one budget, and the cost of each defense and attack.

An attack's budget is enforced where it is evaluated: an adversarial image farther from its clean image
than the attack's budget (a minimum-norm attack such as C&W or DeepFool) is replaced by the clean image,
so every number is a robust accuracy at a stated ℓp budget. Attacks without a budget (the on-manifold
attack) are reported beside the table and never enter a worst case.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._validate import check_choice, check_images, check_int, check_labels, check_positive
from .attacks import EOT, bpda, perturbation_sizes
from .defenses.transforms import Preprocessed, majority_vote

__all__ = ["Attack", "Defense", "ThreatTable", "accuracy_with_interval", "evaluate", "wilson_interval", "within_budget"]

Transform = Callable[[Tensor], Tensor]
Model = Callable[[Tensor], Tensor]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (95 % for ``z = 1.96``).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 % and 100 %.
    """
    n = check_int(n, "n")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n] = [0, {n}], got {successes}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_with_interval(correct: Tensor) -> tuple[float, float, float]:
    """The accuracy of per-image outcomes ``correct`` (bool ``(N,)``) and its 95 % Wilson interval: (acc, low, high)."""
    if not isinstance(correct, Tensor) or correct.ndim != 1 or len(correct) == 0:
        raise ValueError("correct must be a non-empty 1-D tensor of per-image outcomes")
    low, high = wilson_interval(int(correct.sum()), len(correct))
    return float(correct.double().mean()), low, high


def within_budget(x: Tensor, x_adv: Tensor, budget: float, norm: str) -> Tensor:
    """``x_adv`` where it lies within ``budget`` of ``x`` (``norm`` "linf" or "l2", per image), else ``x``."""
    check_positive(budget, "budget")
    size = perturbation_sizes(x, x_adv, norm)
    # a float margin: projected attacks land on the boundary up to rounding
    inside = size <= budget * (1 + 1e-5)
    return torch.where(inside.view(-1, *[1] * (x.ndim - 1)), x_adv, x)


@dataclass
class Defense:
    """A defended classifier: ``model(transform(x))``, predicted by a majority vote over ``votes`` draws.

    ``transform=None`` is a defense inside the model (adversarial training) or no defense at all.
    ``backward`` is the BPDA approximation the adaptive attacker differentiates instead of
    ``transform`` (default: the identity); ``attack_transform`` is what the attacker runs in its forward
    pass (default: ``transform``; a cheaper version of an expensive defense, stated with the results);
    ``eot`` is the number of draws the adaptive attacker averages for a randomised transform. ``batch_dependent`` transforms (MimicGAN fits one surrogate per batch) are
    always called on the whole evaluated set at once, as the attacker's batch. ``unit`` states the
    defense's cost in its own terms (generator steps, JPEG encodes, deflections).
    """

    name: str
    model: nn.Module
    transform: Transform | None = None
    votes: int = 1
    randomised: bool = False
    batch_dependent: bool = False
    backward: Transform | None = None
    attack_transform: Transform | None = None
    eot: int = 1
    unit: str = ""

    def __post_init__(self) -> None:
        check_int(self.votes, "votes")
        check_int(self.eot, "eot")
        if self.transform is None and (self.votes > 1 or self.eot > 1 or self.backward is not None
                                       or self.attack_transform is not None):
            raise ValueError(f"{self.name}: votes, eot, backward and attack_transform need a transform")
        if self.transform is not None and not callable(self.transform):
            raise TypeError(f"{self.name}: transform must be callable, got {type(self.transform).__name__}")

    def predict(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """The defended labels of ``x``, ``(B,)``."""
        x = check_images(x, "x")
        if self.batch_dependent:
            batch_size = len(x)
        with torch.no_grad():
            if self.transform is None:
                return torch.cat([self.model(x[i: i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
            if self.votes > 1:
                return majority_vote(self.model, self.transform, x, runs=self.votes, batch_size=batch_size)
            return torch.cat([self.model(self.transform(x[i: i + batch_size])).argmax(1)
                              for i in range(0, len(x), batch_size)])

    def attack_model(self, exact: bool = False) -> Model:
        """What an adaptive attacker differentiates: the classifier, behind the BPDA transform, under EOT.

        The forward pass runs ``attack_transform`` where one is given, or with ``exact`` the defense's own
        ``transform``."""
        if self.transform is None:
            return self.model
        forward = self.transform if exact or self.attack_transform is None else self.attack_transform
        pipeline = Preprocessed(bpda(forward, self.backward), self.model)
        return EOT(pipeline, samples=self.eot) if self.eot > 1 else pipeline


@dataclass(frozen=True)
class Attack:
    """An attack ``run(model, x, y) -> x_adv`` at ``budget`` in ``norm`` ("linf", "l2" or "none").

    ``adaptive=False``: crafted on the defense's bare classifier (``Defense.model``) and shared by every
    defense with the same classifier; ``adaptive=True``: crafted on :meth:`Defense.attack_model`.
    ``only`` restricts an attack to the named defenses (e.g. the on-manifold attack to the GAN defenses).
    ``exact`` (adaptive attacks only): the attacker's forward pass runs the defense itself, not its cheaper
    ``attack_transform`` (:meth:`Defense.attack_model`); on a deterministic defense, an attack that keeps its
    best iterate (``pgd(..., keep_best=True)``) then keeps exactly the iterates that fool the defense.
    """

    name: str
    run: Callable[[Model, Tensor, Tensor], Tensor]
    budget: float
    norm: str = "linf"
    adaptive: bool = False
    only: tuple[str, ...] | None = None
    exact: bool = False

    def __post_init__(self) -> None:
        check_choice(self.norm, "norm", ("linf", "l2", "none"))
        if self.exact and not self.adaptive:
            raise ValueError(f"{self.name}: exact applies to adaptive attacks only")
        if not callable(self.run):
            raise TypeError(f"{self.name}: run must be callable")

    def applies_to(self, defense: Defense) -> bool:
        return self.only is None or defense.name in self.only


@dataclass
class ThreatTable:
    """Per-image outcomes of :func:`evaluate`: ``correct[defense][attack]`` (bool ``(N,)``; ``"clean"``
    included), ``seconds[defense]`` (defended forward pass per image), ``attack_seconds[defense][attack]``
    (crafting time per image; unaware attacks are crafted once per classifier and charged to each of its
    defenses) and ``distances[defense][attack]`` (ℓ2 size of each applied perturbation)."""

    defenses: list[Defense]
    attacks: list[Attack]
    correct: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    attack_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    distances: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def accuracy(self, defense: str, attack: str = "clean") -> float:
        return float(self.correct[defense][attack].double().mean())

    def interval(self, defense: str, attack: str = "clean") -> tuple[float, float]:
        return accuracy_with_interval(self.correct[defense][attack])[1:]

    def budgets(self) -> list[tuple[str, float]]:
        """The (norm, budget) pairs of the bounded attacks, in order of first appearance."""
        seen: list[tuple[str, float]] = []
        for a in self.attacks:
            if a.norm != "none" and (a.norm, a.budget) not in seen:
                seen.append((a.norm, a.budget))
        return seen

    def worst_case(self, defense: str, norm: str, budget: float) -> Tensor:
        """Per image: correct under every attack run at (``norm``, ``budget``) on ``defense`` (bool ``(N,)``)."""
        runs = [self.correct[defense][a.name] for a in self.attacks
                if a.norm == norm and a.budget == budget and a.name in self.correct[defense]]
        if not runs:
            raise KeyError(f"no attack at {norm} {budget:g} ran on {defense!r}")
        return torch.stack(runs).all(0)


def evaluate(defenses: Sequence[Defense], attacks: Sequence[Attack], x: Tensor, y: Tensor, *,
             progress: bool = True) -> ThreatTable:
    """Run every attack that applies on every defense on the images ``x`` ``(N, C, H, W)`` with labels ``y``.

    Unaware attacks are crafted once per distinct classifier and reused; adaptive ones are crafted per
    defense. Every adversarial image is held to its attack's budget (:func:`within_budget`) before the
    defense sees it. Randomised defenses are evaluated by a fresh draw (their own inference rule).
    """
    x = check_images(x, "x")
    y = check_labels(y, x.shape[0], "y").to(x.device)
    names = [d.name for d in defenses]
    if len(set(names)) != len(names) or len({a.name for a in attacks}) != len(attacks):
        raise ValueError("defense names and attack names must be unique")
    if "clean" in {a.name for a in attacks}:
        raise ValueError("'clean' is reserved for the clean images")
    table = ThreatTable(list(defenses), list(attacks))
    cache: dict[tuple[int, str], tuple[Tensor, float]] = {}
    jobs = [(d, a) for d in defenses for a in attacks if a.applies_to(d)]
    bar = tqdm(total=len(defenses) + len(jobs), desc="threat model", disable=not progress)
    for d in defenses:
        start = time.perf_counter()
        table.correct[d.name] = {"clean": d.predict(x) == y}
        table.seconds[d.name] = (time.perf_counter() - start) / len(x)
        table.attack_seconds[d.name], table.distances[d.name] = {}, {}
        bar.update()
    for d, a in jobs:
        bar.set_postfix_str(f"{d.name}: {a.name}", refresh=False)
        key = (id(d.model), a.name)
        if a.adaptive or key not in cache:
            start = time.perf_counter()
            x_adv = a.run(d.attack_model(a.exact) if a.adaptive else d.model, x, y).detach()
            if a.norm != "none":
                x_adv = within_budget(x, x_adv, a.budget, a.norm)
            elapsed = (time.perf_counter() - start) / len(x)
            if not a.adaptive:
                cache[key] = (x_adv, elapsed)
        else:
            x_adv, elapsed = cache[key]
        table.correct[d.name][a.name] = d.predict(x_adv) == y
        table.attack_seconds[d.name][a.name] = elapsed
        table.distances[d.name][a.name] = (x_adv - x).flatten(1).norm(dim=1)
        bar.update()
    bar.close()
    return table

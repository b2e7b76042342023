"""White-box evasion attacks on image classifiers, and the tools to attack randomised defenses.

Every attack has the signature ``attack(model, x, y, **params) -> x_adv``: ``model`` maps images
``(B, C, H, W)`` in [0, 1] to logits ``(B, K)``; ``y`` holds the true labels ``(B,)``; the result
is a detached tensor of the shape of ``x``, in [0, 1], on ``x``'s device. A model that is an
``nn.Module`` is attacked in eval mode (BatchNorm uses, and does not update, its running statistics;
dropout is off), and afterwards every submodule gets back its own train/eval mode, as in torchattacks.
Gradients are taken w.r.t. the input only, so no parameter gradient is ever accumulated. The attacks
are untargeted and vectorised over the batch, except :func:`jsma` and :func:`lbfgs`: they aim at a
target class (by default the most likely wrong class of the clean image), and :func:`lbfgs` solves
one image at a time.

* :func:`fgsm`, :func:`bim`, :func:`pgd` -- gradient ascent on the cross-entropy in an
  L∞ or L2 ball of radius ``eps`` (Goodfellow et al. 2015; Kurakin et al. 2017; Madry et al. 2018);
* :func:`cw_l2` -- Carlini & Wagner's (2017) minimum-norm L2 attack;
* :func:`deepfool` -- Moosavi-Dezfooli et al.'s (2016) multi-class L2 DeepFool;
* :func:`jsma` -- Papernot et al.'s (2016) Jacobian-based Saliency Map Attack (targeted, L0);
* :func:`lbfgs` -- Szegedy et al.'s (2014) box-constrained L-BFGS attack (targeted, L2), with a search
  over its constant ``c``;
* :func:`universal_fgsm` -- one image-agnostic perturbation, the mean targeted FGSM step over a few
  images (a universal perturbation in the sense of MimicGAN's Fig. 4a; signature ``(model, x, target, eps)``,
  returns the perturbation);
* :func:`bpda` and :class:`EOT` -- Athalye et al.'s (2018) answers to non-differentiable and
  randomised defenses;
* :func:`on_manifold_attack` -- an attack on the latent code of a generator, whose result lies on the
  generator's range (against projection defenses such as Defense-GAN; signature
  ``(G, model, x, y, z0, **params)``);
* :func:`overpowered_attack` -- Jalal et al.'s (2019) Overpowered Attack: on the generator's range, within an
  ℓ2 budget, robust to noise around it (same signature);
* :data:`ATTACKS` and :func:`run_attack` -- attacks by name, in mini-batches.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._validate import check_choice, check_generator, check_images, check_int, check_labels, check_positive

Model = Callable[[Tensor], Tensor]
NORMS = ("linf", "l2")

__all__ = ["ATTACKS", "EOT", "ascent_step", "bim", "bpda", "cw_l2", "deepfool", "fgsm", "fgsm_minimal", "jsma", "lbfgs",
           "on_manifold_attack", "overpowered_attack", "per_sample_norms", "perturbation_sizes", "pgd", "project_l2_ball", "run_attack",
           "universal_fgsm"]


# --------------------------------------------------------------------------- helpers
@contextmanager
def _eval_mode(model: Model) -> Iterator[None]:
    """Eval mode for an ``nn.Module`` ``model`` inside the block; on exit (also on an error) every
    submodule's own mode is restored, so a train-mode wrapper around an eval-mode classifier stays so."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    modes = [m.training for m in modules]
    try:
        if modules:
            model.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


def _in_eval_mode(attack: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run ``attack(model, ...)`` inside :func:`_eval_mode` (the signature is kept for :func:`run_attack`)."""
    @functools.wraps(attack)
    def wrapper(model: Model, *args: object, **kwargs: object) -> Tensor:
        with _eval_mode(model):
            return attack(model, *args, **kwargs)
    return wrapper


def _check_inputs(model: Model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if not callable(model):
        raise TypeError(f"model must be a callable mapping images to logits, got {type(model).__name__}")
    x = check_images(x, "x").detach()
    return x, check_labels(y, x.shape[0], "y").to(x.device)


def _logits(model: Model, x: Tensor, y: Tensor) -> Tensor:
    """``model(x)``, checked to be logits ``(B, K)`` with every label ``< K``."""
    out = model(x)
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model must return logits of shape ({x.shape[0]}, K), got {shape}")
    if int(y.max()) >= out.shape[1]:
        raise ValueError(f"y holds label {int(y.max())} but the model has only {out.shape[1]} classes")
    return out


def per_sample_norms(v: Tensor) -> Tensor:
    """Per-sample L2 norms ``‖v_b‖₂`` of a batch ``(B, ...)``, shaped ``(B, 1, ..., 1)`` to broadcast against ``v``.

    Each norm is at least 1e-12, so that ``v / per_sample_norms(v)`` is safe (a zero sample stays zero).
    """
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.ndim - 1)))


def perturbation_sizes(x: Tensor, x_adv: Tensor, norm: str) -> Tensor:
    """The size of each perturbation ``x_adv − x`` of a batch in ``norm`` ("linf" or "l2"), shaped ``(B,)``."""
    check_choice(norm, "norm", ("linf", "l2"))
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


def project_l2_ball(v: Tensor, eps: float) -> Tensor:
    """Project each sample of ``v`` (``(B, ...)``) onto the ℓ2 ball of radius ``eps``: ``v · min(1, ε/‖v‖)``."""
    check_positive(eps, "eps", allow_zero=True)
    return v * (eps / per_sample_norms(v)).clamp(max=1.0)


def _loss_grad(model: Model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """∇ₓ of the summed cross-entropy (each sample's gradient is that of its own loss), and the logits."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = _logits(model, x, y)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return grad, logits.detach()


def ascent_step(z: Tensor, grad: Tensor, step_size: float, project: Callable[[Tensor], Tensor], *,
                sign: bool = False) -> Tensor:
    """One step of projected gradient ascent, the core of every PGD-type loop in the book: ``Π(z + α·d)``.

    ``d = sign(g)`` (steepest ascent in ℓ∞) or ``d = g / ‖g‖₂`` per sample (steepest ascent in ℓ2);
    ``project`` maps the step back onto the feasible set. Used by :func:`pgd` (images, cross-entropy),
    :func:`companion.recon.pga_perturbation` (measurements, reconstruction error) and the perturbation
    player of :func:`companion.recon.fit_linear_alternating`.
    """
    d = grad.sign() if sign else grad / per_sample_norms(grad)
    return project(z + step_size * d)


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then onto [0, 1].

    Clipping to [0, 1] after the projection cannot leave the ball: it only moves pixels towards x.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = project_l2_ball(delta, eps)
    return (x + delta).clamp(0.0, 1.0)


def _random_ball(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform random point of the ``norm`` ball of radius ``eps`` per sample, shape of ``x``."""
    dev = generator.device if generator is not None else x.device
    kw = {"generator": generator, "device": dev, "dtype": x.dtype}
    if norm == "linf":
        return ((torch.rand(x.shape, **kw) * 2 - 1) * eps).to(x.device)
    # Uniform in the L2 ball of R^d: Gaussian direction, radius eps * U^(1/d).
    direction = torch.randn(x.shape, **kw)
    direction = direction / per_sample_norms(direction)
    radius = eps * torch.rand(x.shape[0], **kw).pow(1.0 / x[0].numel())
    return (direction * radius.view(-1, 1, 1, 1)).to(x.device)


# --------------------------------------------------------------------------- L∞ / L2 ball attacks
@_in_eval_mode
def fgsm(model: Model, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Fast Gradient Sign Method: ``x' = clip[0,1](x + eps · sign ∇ₓ CE(f(x), y))``.

    One step to the corner of the L∞ ball of radius ``eps`` (``eps = 0`` returns ``x``).
    """
    x, y = _check_inputs(model, x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    return (x + eps * _loss_grad(model, x, y)[0].sign()).clamp(0.0, 1.0).detach()


@_in_eval_mode
def fgsm_minimal(model: Model, x: Tensor, y: Tensor, eps_grid: list[float] | tuple[float, ...]) -> Tensor:
    """FGSM at the smallest budget of ``eps_grid`` (ascending) that fools each image.

    Images never fooled get the FGSM image of the largest budget. This mimics evaluations that
    tune each attack "for maximum misclassification at the smallest perturbation".
    """
    x, y = _check_inputs(model, x, y)
    if len(eps_grid) == 0 or list(eps_grid) != sorted(eps_grid):
        raise ValueError("eps_grid must be a non-empty ascending list of budgets")
    grad = _loss_grad(model, x, y)[0].sign()
    best, done = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for eps in eps_grid:
        x_adv = (x + check_positive(eps, "eps") * grad).clamp(0.0, 1.0)
        with torch.no_grad():
            take = (_logits(model, x_adv, y).argmax(1) != y) & ~done
        take |= (eps == eps_grid[-1]) & ~done
        best[take] = x_adv[take]
        done |= take
    return best.detach()


@_in_eval_mode
def universal_fgsm(model: Model, x: Tensor, target: Tensor, eps: float) -> Tensor:
    """A universal perturbation from targeted FGSM (Anirudh et al. 2020, Fig. 4a): the mean step ``ν_u``.

    Each image takes one targeted FGSM step towards its ``target`` class, ``x̃_i = clip[0,1](x_i − eps ·
    sign ∇ₓ CE(f(x_i), t_i))``, and ``ν_u = (1/N) Σ_i (x̃_i − x_i)``, shape ``(1, C, H, W)``: one image-agnostic
    vector, added to any image as ``clip[0,1](x + α ν_u)`` at a scale ``α`` of the caller's choice. (The
    paper writes ``Σ_i (X_i − X̃_i)/N``, which would subtract the attack; we keep the sign that attacks.)
    """
    x, target = _check_inputs(model, x, target)
    eps = check_positive(eps, "eps", allow_zero=True)
    x_adv = (x - eps * _loss_grad(model, x, target)[0].sign()).clamp(0.0, 1.0)
    return (x_adv - x).mean(0, keepdim=True).detach()


@_in_eval_mode
def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 40,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    early_stop: bool = False,
    generator: torch.Generator | None = None,
    restarts: int = 1,
    keep_best: bool = False,
    trace: list[list[float]] | None = None,
) -> Tensor:
    """Projected Gradient Descent (Madry et al. 2018): ascent on the cross-entropy in a ball.

    ``x_{t+1} = Π_{B(x, eps) ∩ [0,1]}(x_t + α · d_t)`` with ``d_t = sign(g_t)`` for
    ``norm="linf"`` and ``d_t = g_t / ‖g_t‖₂`` (per sample) for ``norm="l2"``. ``α = step_size``
    defaults to ``2.5 · eps / steps``. With ``random_start`` ``x_0`` is drawn uniformly in the
    ball (L∞: per-pixel uniform; L2: uniform in volume), from ``generator`` when given, so the
    result is reproducible; otherwise ``x_0 = x``. The last iterate is returned. With
    ``early_stop`` an image stops moving as soon as it is misclassified (the "stop once
    adversarial" rule of Kurakin et al.'s IGSM), which keeps perturbations small.

    Checking an attack's strength: ``keep_best`` returns, per image, the best iterate seen instead of the
    last (a misclassified iterate beats a correct one; then the higher cross-entropy wins), so that more
    steps can never give the model a higher accuracy. ``restarts`` > 1 runs the attack again from new random
    starts (it needs ``random_start``) and keeps, per image, the best of the runs' results (their best
    iterates with ``keep_best``, else their last). ``trace``, if given, receives one list per run: the mean
    cross-entropy of every iterate, start and end included (a convergence curve).
    """
    x, y = _check_inputs(model, x, y)
    eps = check_positive(eps, "eps", allow_zero=True)
    steps = check_int(steps, "steps")
    restarts = check_int(restarts, "restarts")
    alpha = 2.5 * eps / steps if step_size is None else check_positive(step_size, "step_size")
    check_choice(norm, "norm", NORMS)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 need random_start=True (without it every run is the same)")
    best: Tensor = x
    best_score: tuple[Tensor, Tensor] | None = None

    def score(logits: Tensor) -> tuple[Tensor, Tensor]:
        """Per image: (misclassified, cross-entropy), compared in that order (larger is a stronger attack)."""
        return logits.argmax(1) != y, F.cross_entropy(logits, y, reduction="none").detach()

    def keep(candidate: Tensor, candidate_score: tuple[Tensor, Tensor]) -> None:
        nonlocal best, best_score
        if best_score is None:
            best, best_score = candidate, candidate_score
            return
        (wrong, ce), (best_wrong, best_ce) = candidate_score, best_score
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (ce > best_ce))
        best = torch.where(better.view(-1, 1, 1, 1), candidate, best)
        best_score = (torch.where(better, wrong, best_wrong), torch.where(better, ce, best_ce))

    for _run in range(restarts):
        x_adv = x
        if random_start:
            x_adv = (x + _random_ball(x, eps, norm, generator)).clamp(0.0, 1.0)
        losses: list[float] = []
        for _ in range(steps):
            g, logits = _loss_grad(model, x_adv, y)
            if trace is not None:
                losses.append(float(F.cross_entropy(logits, y)))
            if keep_best:
                keep(x_adv, score(logits))
            stepped = ascent_step(x_adv, g, alpha, lambda v: _project(v, x, eps, norm), sign=norm == "linf")
            if early_stop:
                still_correct = logits.argmax(1) == y
                if not still_correct.any():
                    break
                stepped = torch.where(still_correct.view(-1, 1, 1, 1), stepped, x_adv)
            x_adv = stepped
        x_adv = x_adv.detach()
        if restarts == 1 and not keep_best and trace is None:
            return x_adv                                   # the plain attack, unchanged
        with torch.no_grad():
            last_logits = _logits(model, x_adv, y)
        if trace is not None:
            trace.append(losses + [float(F.cross_entropy(last_logits, y))])
        keep(x_adv, score(last_logits))
    return best.detach()


def bim(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    early_stop: bool = False,
) -> Tensor:
    """Basic Iterative Method / I-FGSM (Kurakin et al. 2017): :func:`pgd` started at ``x``."""
    return pgd(model, x, y, eps, steps=steps, step_size=step_size, norm=norm, random_start=False, early_stop=early_stop)


# --------------------------------------------------------------------------- minimum-norm attacks
def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """``Z_y − max_{i≠y} Z_i`` per sample (negative iff misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - other


@_in_eval_mode
def cw_l2(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_search_steps: int = 1,
) -> Tensor:
    """Carlini-Wagner L2 attack (untargeted).

    With ``x' = (tanh(w) + 1) / 2`` (always in [0, 1]), Adam minimises over ``w``
    ``‖x' − x‖₂² + c · max(Z_y(x') − max_{i≠y} Z_i(x'), −kappa)`` on the logits ``Z``. Every
    iterate is checked; per sample the successful one (margin ``< −kappa``) of smallest L2 distance
    is kept. **Samples never fooled are returned unchanged** (as in Carlini & Wagner's and
    torchattacks' code), so their perturbation is 0 and they count as robust.

    ``binary_search_steps > 1`` repeats the optimisation (from ``x``, fresh Adam) with a per-sample
    ``c``: multiplied by 10 while the sample was never fooled, then bisected between the largest
    failing and the smallest successful ``c``.
    """
    x, y = _check_inputs(model, x, y)
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    steps = check_int(steps, "steps")
    lr = check_positive(lr, "lr")
    rounds = check_int(binary_search_steps, "binary_search_steps")
    cs = torch.full((x.shape[0],), check_positive(c, "c"), device=x.device, dtype=x.dtype)  # per sample
    lo, hi = torch.zeros_like(cs), torch.full_like(cs, math.inf)
    best, best_l2 = x.clone(), torch.full_like(cs, math.inf)
    w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))  # strictly inside (-1, 1) so w0 is finite
    for _ in range(rounds):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        fooled = torch.zeros_like(cs, dtype=torch.bool)
        for step in range(steps + 1):  # step `steps` only evaluates the final iterate
            with torch.enable_grad():
                x_adv = (torch.tanh(w) + 1) / 2
                l2 = (x_adv - x).flatten(1).pow(2).sum(1)
                margin = _margin(_logits(model, x_adv, y), y)
                with torch.no_grad():
                    ok = margin < -kappa
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
                    fooled |= ok
                if step == steps:
                    break
                loss = (l2 + cs * margin.clamp(min=-kappa)).sum()
                (w.grad,) = torch.autograd.grad(loss, w)
            opt.step()
        hi = torch.where(fooled, torch.minimum(hi, cs), hi)
        lo = torch.where(fooled, lo, torch.maximum(lo, cs))
        cs = torch.where(hi.isinf(), cs * 10, (lo + hi) / 2)
    return best.detach()


@_in_eval_mode
def deepfool(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int = 10,
    steps: int = 50,
    overshoot: float = 0.02,
) -> Tensor:
    """Multi-class DeepFool (L2; Moosavi-Dezfooli et al. 2016), batched.

    Among the ``num_classes`` classes of highest clean logit (``y`` included; all classes if the
    model has fewer), each step linearises ``f_k = Z_k − Z_y`` at the current point and moves to
    the nearest linearised boundary: ``l = argmin_k |f_k| / ‖∇f_k‖``,
    ``r_i = (|f_l| + 1e-4) ∇f_l / ‖∇f_l‖²``. The output is ``clip[0,1](x + (1 + overshoot) Σ r_i)``;
    a sample stops once it is misclassified (or after ``steps`` steps). Gradient components that
    would push a pixel already at 0 or 1 out of [0, 1] are dropped, so that the step is spent on
    pixels that can move (without this, images with many saturated pixels, like MNIST, often end
    just short of the boundary).
    """
    x, y = _check_inputs(model, x, y)
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    steps = check_int(steps, "steps")
    overshoot = check_positive(overshoot, "overshoot", allow_zero=True)
    with torch.no_grad():
        logits = _logits(model, x, y)
        k = min(num_classes, logits.shape[1]) - 1  # number of candidate classes besides y
        others = logits.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices  # (B, k)
    classes = torch.cat([y[:, None], others], dim=1)  # column 0 is the true class
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    active = logits.argmax(1) == y
    for _ in range(steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        with torch.enable_grad():
            xa = x_adv[idx].requires_grad_(True)
            z = _logits(model, xa, y[idx]).gather(1, classes[idx])  # (b, k + 1)
            grads = torch.stack(
                [torch.autograd.grad(z[:, j].sum(), xa, retain_graph=j < k)[0] for j in range(k + 1)], 1
            )
        f = (z[:, 1:] - z[:, :1]).detach()  # (b, k)
        w = grads[:, 1:] - grads[:, :1]  # (b, k, C, H, W)
        # Box constraint: a pixel at 0 (or 1) cannot move further down (up); leaving such components
        # in w wastes the step on clipped coordinates and can stall the attack just short of the boundary.
        at_bound = x_adv[idx].unsqueeze(1)
        w = w * ~(((at_bound <= 0) & (w < 0)) | ((at_bound >= 1) & (w > 0)))
        w_norm = w.flatten(2).norm(dim=2).clamp_min(1e-12)
        nearest = (f.abs() / w_norm).argmin(dim=1)
        rows = torch.arange(len(idx), device=x.device)
        w_l, f_l, n_l = w[rows, nearest], f[rows, nearest], w_norm[rows, nearest]
        r_tot[idx] += ((f_l.abs() + 1e-4) / n_l**2).view(-1, 1, 1, 1) * w_l
        x_adv[idx] = (x[idx] + (1 + overshoot) * r_tot[idx]).clamp(0.0, 1.0)
        with torch.no_grad():
            active[idx] = _logits(model, x_adv[idx], y[idx]).argmax(1) == y[idx]
    return x_adv.detach()


# --------------------------------------------------------------------------- targeted: L0 (JSMA) and L-BFGS
def _targets(model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """The target class of every image and its clean logits.

    ``target=None``: the most likely class other than ``y`` on the clean input, i.e. the second most
    likely class of a correctly classified image (the natural strong target of an untargeted study); a
    misclassified image's target is its own prediction, so it counts as fooled from the start.
    """
    with torch.no_grad():
        logits = _logits(model, x, y)
    if target is None:
        return logits.scatter(1, y[:, None], float("-inf")).argmax(1), logits
    target = check_labels(target, x.shape[0], "target").to(x.device)
    if int(target.max()) >= logits.shape[1]:
        raise ValueError(f"target holds class {int(target.max())} but the model has only {logits.shape[1]} classes")
    if bool((target == y).any()):
        raise ValueError("target must differ from the true label y for every image")
    return target, logits


def _saliency_grads(model: Model, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The logits at ``x`` and, flattened to ``(B, n)``, the forward derivatives ``∇ₓ Z_t`` and ``∇ₓ Σ_{i≠t} Z_i``.

    Two backward passes for the whole batch (each logit depends on its own image only), instead of
    the ``K`` of a full Jacobian.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = _logits(model, x, t)
        is_t = F.one_hot(t, logits.shape[1]).to(logits.dtype)
        (g_t,) = torch.autograd.grad((logits * is_t).sum(), x, retain_graph=True)
        (g_o,) = torch.autograd.grad((logits * (1 - is_t)).sum(), x)
    return logits.detach(), g_t.flatten(1), g_o.flatten(1)


def _best_feature(g_t: Tensor, g_o: Tensor, domain: Tensor) -> tuple[Tensor, Tensor]:
    """Single-feature saliency ``S_j = J_t,j · |Σ_{i≠t} J_i,j|`` if ``J_t,j ≥ 0`` and ``Σ_{i≠t} J_i,j ≤ 0``, else 0.

    Returns the feature of largest saliency in the search ``domain`` per image, and whether its saliency
    is positive (a map that is zero everywhere says nothing about which feature to raise).
    """
    s = torch.where(domain & (g_t >= 0) & (g_o <= 0), g_t * g_o.abs(), torch.zeros_like(g_t))
    best, p = s.max(dim=1)
    return p, best > 0


def _best_pair(g_t: Tensor, g_o: Tensor, domain: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel-pair saliency of Papernot et al. (2016), as in torchattacks 3.5.1's ``JSMA.saliency_map``.

    For ``p ≠ q`` in the ``domain``: ``α = J_t,p + J_t,q`` and ``β = Σ_{i≠t} (J_i,p + J_i,q)``; the
    saliency ``α · |β|`` counts only where ``α > 0`` and ``β < 0``. The pair of largest saliency (on ties,
    the first in row-major order, as ``argmax`` in torchattacks, so ``p < q``) and whether it is positive.
    The ``n × n`` maps are built a few images at a time (about 4 M entries each).
    """
    b, n = g_t.shape
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=g_t.device)
    chunk = max(1, 2**22 // (n * n))
    ps, qs, oks = [], [], []
    for i in range(0, b, chunk):
        t, o, d = g_t[i: i + chunk], g_o[i: i + chunk], domain[i: i + chunk]
        alpha = t[:, None, :] + t[:, :, None]
        beta = o[:, None, :] + o[:, :, None]
        admissible = (alpha > 0) & (beta < 0) & off_diagonal & d[:, None, :] & d[:, :, None]
        s = torch.where(admissible, alpha * beta.abs(), torch.zeros_like(alpha)).flatten(1)
        best, idx = s.max(dim=1)
        ps.append(torch.div(idx, n, rounding_mode="floor"))
        qs.append(idx % n)
        oks.append(best > 0)
    return torch.cat(ps), torch.cat(qs), torch.cat(oks)


@_in_eval_mode
def jsma(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    theta: float = 1.0,
    gamma: float = 0.1,
    pairs: bool = False,
) -> Tensor:
    """Jacobian-based Saliency Map Attack (Papernot et al. 2016): a targeted L0 attack that raises features.

    Each iteration takes the forward derivatives of the logits ``Z`` at the current image,
    ``J_t = ∇ₓ Z_t`` for the target ``t`` and ``Σ_{i≠t} J_i`` for the other classes (two batched
    backward passes), and raises by ``theta`` (then clips to [0, 1]) the feature(s) of largest saliency:

    * ``pairs=False`` (the paper's single-feature saliency map): ``S_j = 0`` if ``J_t,j < 0`` or
      ``Σ_{i≠t} J_i,j > 0``, else ``J_t,j · |Σ_{i≠t} J_i,j|``. The search domain holds the features
      below 1; a feature leaves it once it saturates at 1 (with ``theta=1``, at its first step).
    * ``pairs=True``: the pixel-pair map of the paper, as torchattacks 3.5.1's ``JSMA`` computes it,
      for cross-checks: for ``p ≠ q``, ``α = J_t,p + J_t,q``, ``β = Σ_{i≠t} (J_i,p + J_i,q)``,
      saliency ``α · |β|`` where ``α > 0`` and ``β < 0``. As there, the domain starts as the features
      below 0.99 and both features of a pair leave it after their step.

    An image stops when it is classified as its target, after ``⌈gamma · n⌉`` steps of one feature
    (``⌈gamma · n / 2⌉`` steps of two features with ``pairs``; ``n = C·H·W``), so that a fraction
    ``gamma`` of the features at most changes (one feature more with ``pairs`` and odd ``⌈gamma · n⌉``),
    or when no feature (pair) of its domain has positive saliency.
    torchattacks then raises its first pixel instead, the argmax of an all-zero map. All images step
    together; a stopped image no longer moves.

    The target is ``target`` (``(B,)``, each different from ``y``) or, if ``None``, the most likely
    class other than ``y`` on the clean input: the second most likely class of a correctly classified
    image, the natural strong target of an untargeted study. A misclassified image then keeps its
    prediction as target and is returned unchanged. Success of the untargeted study means a
    prediction ``≠ y``. The saliency uses the logits (JSMA-Z in Carlini & Wagner's terms, also what
    torchattacks differentiates when the model returns logits).
    """
    x, y = _check_inputs(model, x, y)
    theta = check_positive(theta, "theta")
    gamma = check_positive(gamma, "gamma")
    if gamma > 1:
        raise ValueError(f"gamma is the largest fraction of features to modify and must lie in (0, 1], got {gamma}")
    if not isinstance(pairs, bool):
        raise TypeError(f"pairs must be a bool, got {type(pairs).__name__}")
    target, _ = _targets(model, x, y, target)
    n = x[0].numel()
    max_steps = math.ceil(gamma * n / 2) if pairs else math.ceil(gamma * n)
    x_adv = x.clone().flatten(1)
    domain = x_adv < (0.99 if pairs else 1.0)  # the features that may still be raised
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        logits, g_t, g_o = _saliency_grads(model, x_adv[idx].view(-1, *x.shape[1:]), target[idx])
        if pairs:
            p, q, ok = _best_pair(g_t, g_o, domain[idx])
            chosen = torch.cat([p, q])
            rows = torch.cat([idx, idx])
        else:
            p, ok = _best_feature(g_t, g_o, domain[idx])
            chosen, rows = p, idx
        move = ok & (logits.argmax(1) != target[idx])
        keep = move.repeat(2) if pairs else move
        rows, chosen = rows[keep], chosen[keep]
        x_adv[rows, chosen] = (x_adv[rows, chosen] + theta).clamp(max=1.0)
        if pairs:  # as torchattacks: a pair leaves the domain after its step, saturated or not
            domain[rows, chosen] = False
        else:
            domain[rows, chosen] = x_adv[rows, chosen] < 1.0
        active[idx] = move
    return x_adv.view_as(x).clamp(0.0, 1.0).detach()


def _ce_grad(model: Model, x: Tensor, t: Tensor) -> tuple[float, np.ndarray]:
    """``CE(Z(x), t)`` and its gradient w.r.t. ``x``, flattened in float64 (for scipy)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(_logits(model, x, t), t, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), g.detach().cpu().double().numpy().ravel()


def _fooled(model: Model, x: Tensor, t: Tensor) -> bool:
    """Whether ``model`` classifies the single image ``x`` as ``t``."""
    with torch.no_grad():
        return bool(_logits(model, x, t).argmax(1) == t)


def _lbfgs_solve(model: Model, x: Tensor, t: Tensor, c: float, steps: int) -> Tensor:
    """``argmin_{x' ∈ [0,1]^n} c·‖x' − x‖²₂ + CE(Z(x'), t)`` for one image ``x`` ``(1, C, H, W)``.

    L-BFGS-B started at ``x``, at most ``steps`` iterations. The distance term and its gradient
    ``2c(x' − x)`` are computed in float64, the cross-entropy and its gradient by the model.
    """
    from scipy.optimize import Bounds, minimize

    x0 = x.detach().cpu().double().numpy().ravel()

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        xv = torch.from_numpy(v).to(x.device, x.dtype).view_as(x)
        ce, g = _ce_grad(model, xv, t)
        return c * float(((v - x0) ** 2).sum()) + ce, 2 * c * (v - x0) + g

    res = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=Bounds(0.0, 1.0), options={"maxiter": steps})
    return torch.from_numpy(res.x).to(x.device, x.dtype).view_as(x).clamp(0.0, 1.0)


@_in_eval_mode
def lbfgs(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    c_grid: Sequence[float] = (100.0, 10.0, 1.0, 0.1, 0.01),
    steps: int = 50,
    bisection_steps: int = 3,
) -> Tensor:
    """Box-constrained L-BFGS attack (Szegedy et al. 2014), targeted, with a search over ``c``.

    For a constant ``c > 0`` the attack solves ``min_{x' ∈ [0,1]^n} c·‖x' − x‖²₂ + CE(Z(x'), t)``
    with scipy's L-BFGS-B (``steps`` iterations at most, started at ``x``, gradients from autograd),
    **one image at a time**: each image's result is independent of the rest of the batch, at the
    price of batch-1 model calls. A large ``c`` keeps ``x'`` close to ``x``, a small one buys the
    target class; the attack wants the largest ``c`` whose solution is classified as ``t``. Per image,
    the constants of ``c_grid`` (strictly descending) are tried in turn until a solution succeeds; then
    ``bisection_steps`` geometric bisections ``c = √(c_ok · c_fail)`` refine between that constant and
    the last failing one (none if the first constant already succeeds). Of all successful solutions the
    one closest to ``x`` in L2 is returned; an image never fooled returns its last solution (that of
    the smallest ``c``), and an image already classified as its target is returned unchanged.

    The target is ``target`` (``(B,)``, each different from ``y``) or, if ``None``, the most likely
    class other than ``y`` on the clean input, as in :func:`jsma`.
    """
    x, y = _check_inputs(model, x, y)
    if not isinstance(c_grid, (list, tuple)):
        raise TypeError(f"c_grid must be a list or tuple of constants c > 0, got {type(c_grid).__name__}")
    c_grid = [check_positive(c, "c_grid entry") for c in c_grid]
    if not c_grid or any(a <= b for a, b in zip(c_grid, c_grid[1:])):
        raise ValueError("c_grid must be a non-empty, strictly descending sequence of constants c > 0")
    steps = check_int(steps, "steps")
    bisection_steps = check_int(bisection_steps, "bisection_steps", minimum=0)
    target, logits = _targets(model, x, y, target)
    out = x.clone()
    for b in torch.nonzero(logits.argmax(1) != target).squeeze(1).tolist():
        xb, tb = x[b: b + 1], target[b: b + 1]
        c_fail = c_ok = None
        for c in c_grid:  # descending: the first success is the largest constant of the grid that works
            sol = _lbfgs_solve(model, xb, tb, c, steps)
            if _fooled(model, sol, tb):
                c_ok = c
                break
            c_fail = c
        candidates = [sol] if c_ok is not None else []
        if c_ok is not None and c_fail is not None:
            for _ in range(bisection_steps):
                c = math.sqrt(c_ok * c_fail)
                sol = _lbfgs_solve(model, xb, tb, c, steps)
                if _fooled(model, sol, tb):
                    c_ok = c
                    candidates.append(sol)
                else:
                    c_fail = c
        if candidates:  # otherwise sol is the last solution, that of the smallest c
            sol = min(candidates, key=lambda s: float((s - xb).norm()))
        out[b] = sol[0]
    return out.detach()


# --------------------------------------------------------------------------- adaptive-attack tools
def bpda(transform: Callable[[Tensor], Tensor], approx: Callable[[Tensor], Tensor] | None = None) -> Model:
    """Backward Pass Differentiable Approximation (Athalye et al. 2018).

    Returns ``g`` with ``g(x) = transform(x)`` in the forward pass and the gradient of ``approx``
    (default: the identity, i.e. the straight-through estimator) in the backward pass:
    ``g(x) = a(x) + (transform(x) − a(x)).detach()``. ``transform`` may be non-differentiable
    (quantisation, JPEG, denoising...). Use ``nn.Sequential``-style composition, e.g.
    ``lambda x: classifier(bpda(defense)(x))``.
    """
    if not callable(transform):
        raise TypeError(f"transform must be callable, got {type(transform).__name__}")
    if approx is not None and not callable(approx):
        raise TypeError(f"approx must be callable or None, got {type(approx).__name__}")

    def straight_through(x: Tensor) -> Tensor:
        with torch.no_grad():
            out = transform(x.detach())
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(f"transform must return a tensor of the input's shape {tuple(x.shape)}")
        a = x if approx is None else approx(x)
        return a + (out - a).detach()

    return straight_through


class EOT(nn.Module):
    """Expectation over Transformation (Athalye et al. 2018) for a randomised ``model``.

    ``forward(x)`` calls ``model`` ``samples`` times (each call draws its own randomness) and
    returns ``log( (1/S) Σ_s softmax(model(x)) )``, shape ``(B, K)``: log-probabilities of the
    expected prediction. Fed to an attack as logits (softmax is invariant to the shift), the
    cross-entropy on it is ``−log E[p_y]``, the loss of the averaged prediction; its argmax is the
    majority-probability class. Athalye et al. and ``torchattacks.EOTPGD`` average the loss instead,
    ``E[−log p_y]`` (by Jensen, an upper bound of ours); the two gradients point the same way when the
    draws agree, and ours weights the draws by their probability of ``y``.
    """

    def __init__(self, model: Model, samples: int = 10) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.samples = check_int(samples, "samples")

    def forward(self, x: Tensor) -> Tensor:
        logp = torch.stack([F.log_softmax(self.model(x), dim=1) for _ in range(self.samples)])
        return torch.logsumexp(logp, dim=0) - math.log(self.samples)


# --------------------------------------------------------------------------- on a generator's range
def on_manifold_attack(G: nn.Module, model: nn.Module, x: Tensor, y: Tensor, z0: Tensor, *, c: float = 1.0,
                       steps: int = 100, lr: float = 0.05, kappa: float = 0.0, keep_best: bool = False) -> Tensor:
    """The simple on-manifold attack of eq. 5.13 (Lin et al. 2019, Invert and Defend): ``x_adv = G(z*)``,
    ``z* = argmin_z ‖x − G(z)‖²₂ + c · max(Z_y − max_{i≠y} Z_i, −kappa)`` on the logits ``Z`` of ``model(G(z))``
    (the C&W margin of :func:`cw_l2`).

    Adam from ``z0`` ``(B, d)`` (e.g. the encoder's ``I(x)``). The result lies exactly on the generator's
    range, so a perfect projection would return it unchanged. ``G`` must be in eval mode; ``model`` is
    used in the mode it is in. By default the last iterate is returned; with ``kappa = 0`` it sits on the
    decision boundary (the margin term stops pulling as soon as the image is misclassified). ``kappa > 0``
    asks for a margin of ``kappa`` beyond the boundary; ``keep_best`` returns, per image, the iterate (the
    start and the end included) of smallest ``‖x − G(z)‖`` among those misclassified with a margin of at
    least ``kappa`` (as :func:`cw_l2` keeps its iterates), and for an image never so misclassified the
    iterate of lowest margin.
    """
    d = check_generator(G)
    check_images(x, "x")
    y = check_labels(y, x.shape[0], "y").to(x.device)
    check_positive(c, "c")
    kappa = check_positive(kappa, "kappa", allow_zero=True)
    steps = check_int(steps, "steps")
    if not isinstance(z0, Tensor) or tuple(z0.shape) != (x.shape[0], d):
        raise ValueError(f"z0 must have shape (B, {d})")
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=check_positive(lr, "lr"))
    best = _BestIterate(x.shape[0], x.device) if keep_best else None
    with torch.enable_grad():
        for step in range(steps + (1 if keep_best else 0)):   # with keep_best the last iterate is scored too
            img = G(z)
            dist = (img - x).pow(2).flatten(1).sum(1)
            margin = _margin(model(img), y)
            if best is not None:
                best.update(img.detach().clamp(0, 1), margin < -kappa, -dist.detach(), -margin.detach())
                if step == steps:
                    break
            hinge = margin.clamp(min=0) if kappa == 0 else margin.clamp(min=-kappa)
            loss = (dist + c * hinge).sum()
            (z.grad,) = torch.autograd.grad(loss, z)
            opt.step()
    if best is not None:
        return best.images
    with torch.no_grad():
        return G(z).clamp(0, 1)


class _BestIterate:
    """Per image, the best iterate of a latent-space attack: a successful iterate beats an unsuccessful one;
    among successful ones the higher ``value_ok`` wins, among unsuccessful ones the higher ``value_fail``."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.images: Tensor | None = None
        self.ok = torch.zeros(n, dtype=torch.bool, device=device)
        self.value = torch.full((n,), -math.inf, device=device)

    def update(self, images: Tensor, ok: Tensor, value_ok: Tensor, value_fail: Tensor) -> None:
        value = torch.where(ok, value_ok, value_fail)
        better = (ok & ~self.ok) | ((ok == self.ok) & (value > self.value))
        self.images = images if self.images is None else torch.where(better.view(-1, 1, 1, 1), images, self.images)
        self.ok, self.value = self.ok | ok, torch.where(better, value, self.value)


def overpowered_attack(G: nn.Module, model: nn.Module, x: Tensor, y: Tensor, z0: Tensor, *,
                       eps: float | Tensor = 0.0051, sigma: float = 1.0, samples: int = 8, steps: int = 200,
                       lr: float = 0.05, kappa: float = 2.0, lambda_lr: float = 1.0,
                       generator: torch.Generator | None = None) -> Tensor:
    """The Overpowered Attack of Jalal et al. (2019), eq. 5.4 of Lin et al.: an image ``G(z*)`` on the generator's
    range, within a mean squared distance ``eps`` of ``x``, whose whole neighbourhood fools ``model``.

    Solves ``max_z min_{λ≥0} E_τ[ℓ(G(z) + σ τ/‖τ‖₂)] + λ (eps − ‖G(z) − x‖²₂ / n)`` (``n`` pixels) with the C&W
    loss ``ℓ = min(max_{i≠y} Z_i − Z_y, kappa)`` of :func:`cw_l2`'s margin on the logits ``Z``: Adam steps on
    ``z`` from ``z0`` ``(B, d)`` on the Lagrangian (the expectation over ``samples`` noise directions of norm
    ``sigma``, drawn from ``generator``), and dual ascent on each image's ``λ``:
    ``λ ← max(0, λ + lambda_lr · (‖G(z) − x‖²₂ / n − eps) / eps)``, from ``λ = 0``. ``eps`` is a number or a
    per-image tensor ``(B,)``. Returns ``G(z)`` of the best iterate per image: within the budget beats outside
    it; within it, the lowest noise-free margin ``Z_y − max_{i≠y} Z_i`` wins; outside it, the smallest
    distance. ``G`` must be in eval mode; ``model`` is used in the mode it is in.
    """
    d = check_generator(G)
    check_images(x, "x")
    y = check_labels(y, x.shape[0], "y").to(x.device)
    if isinstance(eps, Tensor):
        if eps.shape != (x.shape[0],) or not bool((eps > 0).all()):
            raise ValueError(f"eps must be a positive number or a tensor of {x.shape[0]} positive budgets")
        budget = eps.detach().to(x.device, x.dtype)
    else:
        budget = torch.full((x.shape[0],), check_positive(eps, "eps"), device=x.device, dtype=x.dtype)
    sigma = check_positive(sigma, "sigma", allow_zero=True)
    samples, steps = check_int(samples, "samples"), check_int(steps, "steps", minimum=0)
    kappa, lambda_lr = check_positive(kappa, "kappa", allow_zero=True), check_positive(lambda_lr, "lambda_lr")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(z0, Tensor) or tuple(z0.shape) != (x.shape[0], d):
        raise ValueError(f"z0 must have shape (B, {d})")
    b, n = x.shape[0], x[0].numel()
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=check_positive(lr, "lr"))
    lam = torch.zeros(b, device=x.device, dtype=x.dtype)
    best = _BestIterate(b, x.device)
    with torch.enable_grad():
        for step in range(steps + 1):                     # the last pass only scores the final iterate
            img = G(z)
            mse = (img - x).pow(2).flatten(1).sum(1) / n
            with torch.no_grad():
                shown, dist = img.detach().clamp(0, 1), mse.detach()
                best.update(shown, dist <= budget, -_margin(model(shown), y), -dist)
            if step == steps:
                break
            tau = torch.randn((samples, *img.shape), generator=generator,
                              device=generator.device if generator is not None else x.device).to(x.device, x.dtype)
            tau = sigma * tau / per_sample_norms(tau.flatten(0, 1)).view(samples, b, *([1] * (img.ndim - 1)))
            noisy = (img.unsqueeze(0) + tau).flatten(0, 1)
            loss_cw = (-_margin(model(noisy), y.repeat(samples))).clamp(max=kappa).view(samples, b).mean(0)
            lagrangian = loss_cw + lam * (budget - mse) / budget
            (z.grad,) = torch.autograd.grad(-lagrangian.sum(), z)
            opt.step()
            lam = (lam + lambda_lr * (mse.detach() - budget) / budget).clamp(min=0)
    return best.images.detach()


# --------------------------------------------------------------------------- by name, in batches
ATTACKS: dict[str, Callable[..., Tensor]] = {"fgsm": fgsm, "fgsm_minimal": fgsm_minimal, "pgd": pgd, "bim": bim, "cw": cw_l2, "deepfool": deepfool,
                                             "jsma": jsma, "lbfgs": lbfgs}


def run_attack(
    name: str,
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
    progress: bool = False,
    **params: object,
) -> Tensor:
    """Run the attack ``ATTACKS[name]`` with ``params`` on ``(x, y)`` in mini-batches.

    Returns the concatenated adversarial images (shape of ``x``, in [0, 1]); ``progress`` shows
    a ``tqdm`` bar. A ``generator`` passed to ``pgd`` is consumed batch after batch, so the
    result is reproducible for a fixed ``batch_size``.
    """
    check_choice(name, "attack", ATTACKS)
    x, y = _check_inputs(model, x, y)
    batch_size = check_int(batch_size, "batch_size")
    attack = ATTACKS[name]
    accepted = list(inspect.signature(attack).parameters)[3:]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"{name} got unknown parameter(s) {unknown}; it accepts {accepted}")
    starts = range(0, x.shape[0], batch_size)
    bar = tqdm(starts, desc=name, disable=not progress, total=len(starts))
    return torch.cat([attack(model, x[i: i + batch_size], y[i: i + batch_size], **params) for i in bar])

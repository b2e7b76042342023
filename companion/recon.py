"""Adversarially robust image reconstruction (Raj, Bresler and Li, ICML 2020).

A reconstruction network ``f`` maps measurements ``y = A x`` back to images. Its robustness is judged
by the worst reconstruction error over perturbations ``δ`` of the *measurements* with ``‖δ‖₂ ≤ ε``
(:func:`worst_case_error`, projected gradient ascent). trains ``f`` in five
ways (:func:`train_reconstruction`): plainly, with weight decay, as a Parseval network (:func:`parseval_retraction`) or by the paper's
min-max game against an attacker network ``G(y)`` (:class:`PerturbationNet`).

For a one-layer linear ``f(y) = B y`` the min-max problem has a closed form, a singular-value-filtered
pseudo-inverse (:func:`filtered_pinv`); :func:`minmax_objective`, :func:`fit_linear_analytic` and
:func:`fit_linear_alternating` let the chapter check it numerically, and :func:`linear_worst_case` gives
the exact worst case of a linear reconstructor, against which the PGA metric is checked
(:func:`pga_convergence` audits its strength on the networks). :func:`tune_regulariser` chooses the
baselines' strengths on a validation split; :func:`train_attacker` trains a fresh attacker network
against a frozen reconstruction network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_choice, check_int, check_positive
from .attacks import ascent_step, per_sample_norms, project_l2_ball
from .inverse import LinearOperator, MatrixOperator
from .train import History, Step, frozen, module_device, train_loop

SCHEMES = ("plain", "weight_decay", "parseval", "minmax", "pga")


# --------------------------------------------------------------------------------------------------
# Linear theory
# --------------------------------------------------------------------------------------------------
@dataclass
class FilteredInverse:
    """The min-max optimal linear reconstructor ``B = V diag(q) Uᵀ`` of ``A = U diag(s) Vᵀ``.

    ``s`` and ``q`` are in *increasing* order of ``s`` (the theorem's convention); the ``k`` smallest
    singular values have their inverses clipped to the common level ``qhat``.
    """

    B: torch.Tensor
    s: torch.Tensor
    q: torch.Tensor
    k: int
    qhat: float


def _check_matrix(a: torch.Tensor) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) or a.ndim != 2 or 0 in a.shape:
        raise ValueError("A must be a non-empty 2-D torch.Tensor (m, n)")
    return a.double()


def filtered_pinv(A: torch.Tensor, lam: float, eps: float) -> FilteredInverse:
    """Closed-form minimiser of ``J(B) = (1+λ)‖BA − I‖²_F + λε²‖B‖₂²`` (float64).

    With singular values ``s_1 ≤ … ≤ s_r``: ``q_i = min(1/s_i, q̂)`` where
    ``q̂ = Σ_{i≤k} s_i / (Σ_{i≤k} s_i² + ε²λ/(1+λ))`` and ``k`` is the index with
    ``s_k < 1/q̂ ≤ s_{k+1}``. For ``λε = 0`` this is the pseudo-inverse (``k = 0``).
    """
    a = _check_matrix(A)
    check_positive(lam, "lam", allow_zero=True)
    check_positive(eps, "eps", allow_zero=True)
    u, s_dec, vt = torch.linalg.svd(a, full_matrices=False)
    r = int((s_dec > s_dec[0] * max(a.shape) * torch.finfo(a.dtype).eps).sum())
    if r == 0:
        raise ValueError("A is zero: there is nothing to invert")
    u, s, v = u[:, :r].flip(1), s_dec[:r].flip(0), vt[:r].T.flip(1)  # increasing order
    eps_eff2 = eps**2 * lam / (1 + lam)
    if eps_eff2 == 0:
        q, k, qhat = 1 / s, 0, float("inf")
    else:
        csum, csum2 = torch.cumsum(s, 0), torch.cumsum(s**2, 0)
        for k in range(1, r + 1):
            qhat = float(csum[k - 1] / (csum2[k - 1] + eps_eff2))
            upper = float(s[k]) if k < r else float("inf")
            if float(s[k - 1]) < 1 / qhat <= upper:
                break
        q = torch.minimum(1 / s, torch.tensor(qhat, dtype=s.dtype))
    return FilteredInverse(B=(v * q) @ u.T, s=s, q=q, k=k, qhat=qhat)


def minmax_objective(B: torch.Tensor, A: torch.Tensor, lam: float, eps: float) -> torch.Tensor:
    """``J(B) = (1+λ)‖BA − I‖²_F + λε²‖B‖₂²``: the linear min-max objective with a shared ``δ``,
    for data with ``E[x] = 0`` and ``E[xxᵀ] = I`` (the inner maximum is taken exactly)."""
    if B.ndim != 2 or A.ndim != 2 or B.shape != (A.shape[1], A.shape[0]):
        raise ValueError(f"B must have shape (n, m) = {(A.shape[1], A.shape[0])} for A of shape {tuple(A.shape)}, "
                         f"got {tuple(B.shape)}")
    eye = torch.eye(A.shape[1], dtype=B.dtype, device=B.device)
    return (1 + lam) * ((B @ A.to(B.dtype) - eye) ** 2).sum() + lam * eps**2 * torch.linalg.matrix_norm(B, 2) ** 2


def fit_linear_analytic(A: torch.Tensor, lam: float, eps: float, *, steps: int = 20_000, lr: float = 1e-2,
                        progress: bool = True) -> torch.Tensor:
    """Train ``B`` by Adam on :func:`minmax_objective` from ``Aᵀ`` (float64, cosine-decayed lr)."""
    a = _check_matrix(A)
    check_int(steps, "steps")
    B = a.T.clone().requires_grad_(True)
    opt = torch.optim.Adam([B], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def step(_: torch.Tensor | None) -> dict[str, float]:
        loss = minmax_objective(B, a, lam, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"objective": float(loss.detach())}

    train_loop(step, [], steps=steps, desc="linear min-max (exact inner max)", progress=progress)
    return B.detach()


def fit_linear_alternating(A: torch.Tensor, lam: float, eps: float, *, steps: int = 6000, batch_size: int = 256,
                           lr: float = 5e-3, generator: torch.Generator | None = None,
                           progress: bool = True) -> torch.Tensor:
    """Train ``B`` by the stochastic min-max game: sampled ``x ~ N(0, I)``, one shared ``δ``.

    Each step takes one normalised gradient-ascent step on ``δ`` (length ``ε/2``, then back onto the
    ``ε``-ball) and one Adam step on ``B`` (cosine-decayed learning rate), starting from ``Aᵀ``.
    """
    a = _check_matrix(A)
    check_int(steps, "steps")
    check_positive(eps, "eps")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    m, n = a.shape
    B = a.T.clone().requires_grad_(True)
    delta = project_l2_ball(torch.randn(1, m, generator=gen, dtype=a.dtype), eps)
    opt = torch.optim.Adam([B], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def step(_: torch.Tensor | None) -> dict[str, float]:
        nonlocal delta
        x = torch.randn(batch_size, n, generator=gen, dtype=a.dtype)
        y = x @ a.T
        d = delta.clone().requires_grad_(True)
        adv = (((y + d) @ B.detach().T - x) ** 2).sum(1).mean()
        (grad,) = torch.autograd.grad(adv, d)
        delta = ascent_step(d.detach(), grad, 0.5 * eps, lambda v: project_l2_ball(v, eps))   # δ has one sample
        loss = ((y @ B.T - x) ** 2).sum(1).mean() + lam * (((y + delta) @ B.T - x) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": float(loss.detach())}

    train_loop(step, [], generator=gen, steps=steps, desc="linear min-max (alternating)", progress=progress)
    return B.detach()


def normalised_samples(n: int, dim: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` Gaussian samples in ``R^dim`` (float64) whitened so that their *sample* mean is 0 and their
    sample covariance is exactly ``I``: the theorem's assumptions hold on the training set itself."""
    check_int(n, "n", minimum=dim + 1)
    z = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / n)
    return torch.linalg.solve_triangular(chol, z.T, upper=False).T


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------
class ReconNet(nn.Module):
    """``f(y) = z + CNN(z)`` with ``z = W y`` reshaped to an image; ``W`` starts at ``A⁺``.

    The CNN has ``depth`` 3×3 convolutions ``1 → C → … → C → 1`` with ReLUs and no normalisation.
    """

    def __init__(self, op: MatrixOperator, channels: int = 16, depth: int = 4) -> None:
        super().__init__()
        check_int(channels, "channels")
        check_int(depth, "depth", minimum=2)
        if len(op.in_shape) != 3:
            raise ValueError(f"ReconNet needs an operator on images (C, H, W), got in_shape {op.in_shape}")
        self.in_shape = op.in_shape
        self.initial = nn.Linear(op.m, op.n, bias=False)
        with torch.no_grad():
            self.initial.weight.copy_(op.pinv())
        c_in = op.in_shape[0]
        widths = [c_in] + [channels] * (depth - 1) + [c_in]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.refine = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = self.initial(y).view(len(y), *self.in_shape)
        return z + self.refine(z)


class PerturbationNet(nn.Module):
    """The attacker ``G(y)``: an MLP ``m → hidden → hidden → m`` whose output is projected onto the
    ℓ2 ball of radius ``eps``, so ``‖G(y)‖₂ ≤ ε`` holds exactly (the bound term as a hard constraint)."""

    def __init__(self, m: int, eps: float, hidden: int = 256) -> None:
        super().__init__()
        check_int(m, "m")
        self.eps = check_positive(eps, "eps")
        self.net = nn.Sequential(nn.Linear(m, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, m))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return project_l2_ball(self.net(y), self.eps)


class SharedPerturbation(nn.Module):
    """An attacker network that ignores its input: one learned ``δ`` (projected onto the ``eps`` ball)
    shared by every measurement. Played against a linear ``f`` it is the theorem's shared-``δ`` game,
    played with the paper's mechanism (:func:`minmax_step`)."""

    def __init__(self, m: int, eps: float) -> None:
        super().__init__()
        check_int(m, "m")
        self.eps = check_positive(eps, "eps")
        self.delta = nn.Parameter(torch.zeros(1, m))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return project_l2_ball(self.delta.to(y.dtype), self.eps).expand(len(y), -1)


def _parseval_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.view(m.weight.shape[0], -1) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def parseval_retraction(model: nn.Module, beta: float) -> None:
    """One Parseval step on every ``Linear``/``Conv2d`` weight: ``W ← (1+β)W − β W Wᵀ W``.

    Convolution kernels are reshaped to ``c_out × (c_in·k·k)``. The step moves every singular value
    ``σ`` of ``W`` to ``(1+β)σ − βσ³``, towards 1, keeping each layer close to a tight frame. This
    converges only while ``βσ² < 2`` for every singular value; :func:`check_parseval_stable` checks it.
    """
    check_positive(beta, "beta")
    with torch.no_grad():
        for w in _parseval_weights(model):
            cubic = w @ (w.T @ w) if w.shape[0] > w.shape[1] else (w @ w.T) @ w   # the cheaper order
            w.copy_((1 + beta) * w - beta * cubic)


def check_parseval_stable(model: nn.Module, beta: float) -> None:
    """Raise if some layer has a singular value ``σ`` with ``βσ² ≥ 2``, where the retraction diverges."""
    with torch.no_grad():
        for w in _parseval_weights(model):
            sigma = float(torch.linalg.matrix_norm(w.double(), 2))
            if beta * sigma**2 >= 2:
                raise ValueError(f"the Parseval retraction with beta={beta:g} diverges on a layer with singular value "
                                 f"{sigma:.3g} (needs beta·σ² < 2); lower beta below {2 / sigma**2:.3g}")


# --------------------------------------------------------------------------------------------------
# Robustness metric
# --------------------------------------------------------------------------------------------------
def reconstruction_error(net: nn.Module, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image ℓ2 error ``‖f(y) − x‖₂`` (not squared)."""
    return (net(y) - x).flatten(1).norm(dim=1)


PGA_STARTS = ("centre", "sphere")
PGA_SCHEDULES = ("constant", "cosine")


def pga_perturbation(net: nn.Module, y: torch.Tensor, x: torch.Tensor, eps: float, *, steps: int,
                     generator: torch.Generator, start: str = "centre", step_size: float | None = None,
                     schedule: str = "constant",
                     history: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of projected gradient ascent on ``‖f(y + δ) − x‖²`` over ``‖δ‖₂ ≤ ε``.

    By default it starts on the sphere of radius ``0.1ε`` (``start="centre"``) and takes ``steps``
    normalised gradient steps of length ``2.5ε/steps``, each followed by projection onto the ball.
    ``start="sphere"`` starts at a uniform random point of the ``ε``-sphere instead (well-spread
    restarts); ``step_size`` sets the (first) step length; ``schedule="cosine"`` decays it to zero
    along half a cosine. Returns, per image, the iterate ``δ`` with the largest ℓ2 error and that
    error. A list passed as ``history`` receives the per-image best error after each iterate.
    """
    check_choice(start, "start", PGA_STARTS)
    check_choice(schedule, "schedule", PGA_SCHEDULES)
    alpha = 2.5 * eps / steps if step_size is None else check_positive(step_size, "step_size")
    delta = torch.randn(y.shape, generator=generator).to(y)
    delta = (0.1 * eps if start == "centre" else eps) * delta / per_sample_norms(delta)
    best = torch.full((len(y),), -1.0, dtype=y.dtype, device=y.device)
    best_delta = delta.clone()
    for step_index in range(steps + 1):
        delta.requires_grad_(step_index < steps)
        err = reconstruction_error(net, y + delta, x)
        better = err.detach() > best
        best = torch.where(better, err.detach(), best)
        best_delta = torch.where(better.view(-1, *([1] * (delta.ndim - 1))), delta.detach(), best_delta)
        if history is not None:
            history.append(best.clone())
        if step_index == steps:
            break
        (grad,) = torch.autograd.grad((err**2).sum(), delta)
        length = alpha if schedule == "constant" else alpha * 0.5 * (1 + math.cos(math.pi * step_index / steps))
        delta = ascent_step(delta.detach(), grad, length, lambda v: project_l2_ball(v, eps))
    return best_delta, best


def worst_case_error(net: nn.Module, op: LinearOperator, x: torch.Tensor, eps: float, *, steps: int = 20,
                     restarts: int = 1, generator: torch.Generator | None = None,
                     batch_size: int = 512, start: str = "centre", step_size: float | None = None,
                     schedule: str = "constant") -> torch.Tensor:
    """``Δ_max(x; ε) = max_{‖δ‖₂≤ε} ‖f(Ax + δ) − x‖₂`` per image, by projected gradient ascent.

    ``op`` is any :class:`~companion.inverse.LinearOperator` (a dense matrix, a CT projector, ...);
    ``‖δ‖₂`` is taken per sample, whatever the shape of the measurements.

    Runs :func:`pga_perturbation` ``restarts`` times (``start``, ``step_size`` and ``schedule`` are
    passed on) and returns the largest error seen over all iterates, restarts and the clean input (a
    lower bound on the true maximum). ``ε = 0`` gives the clean error.
    """
    check_positive(eps, "eps", allow_zero=True)
    check_int(steps, "steps")
    check_int(restarts, "restarts")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    was_training = net.training
    net.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size]
        y = op.A(xb).detach()
        with torch.no_grad():
            best = reconstruction_error(net, y, xb)
        if eps > 0:
            for _ in range(restarts):
                best = torch.maximum(best, pga_perturbation(net, y, xb, eps, steps=steps, generator=gen, start=start,
                                                            step_size=step_size, schedule=schedule)[1])
        out.append(best)
    net.train(was_training)
    return torch.cat(out)


def pga_convergence(net: nn.Module, op: LinearOperator, x: torch.Tensor, eps: float, *, steps: int, restarts: int,
                    step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The strength audit of the PGA metric: a strong attack's best error so far, per iterate and image.

    Runs ``restarts`` attacks of ``steps`` steps, each from a uniform random point of the ``ε``-sphere
    with a cosine-decayed step (first length ``step_size``, default ``ε/4``), all restarts in one batch.
    Returns ``(steps + 1, restarts, N)``: entry ``[k, r, i]`` is the largest ℓ2 error of image ``i`` seen
    in the first ``k`` steps of restart ``r`` (or clean). Where the maximum over restarts stops rising
    with ``k``, more steps stop helping; comparing one restart with all tells whether more starts would.
    """
    check_positive(eps, "eps")
    check_int(steps, "steps")
    check_int(restarts, "restarts")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    was_training = net.training
    net.eval()
    y = op.A(x).detach()
    reps = (restarts,) + (1,) * (y.ndim - 1)
    history: list[torch.Tensor] = []
    pga_perturbation(net, y.repeat(reps), x.repeat((restarts,) + (1,) * (x.ndim - 1)), eps, steps=steps,
                     generator=gen, start="sphere", step_size=0.25 * eps if step_size is None else step_size,
                     schedule="cosine", history=history)
    with torch.no_grad():
        clean = reconstruction_error(net, y, x)
    net.train(was_training)
    return torch.maximum(torch.stack(history).view(steps + 1, restarts, len(x)), clean)


def linear_worst_case(B: torch.Tensor, r: torch.Tensor, eps: float, *, iterations: int = 200) -> torch.Tensor:
    """Exact ``max_{‖δ‖₂≤ε} ‖r + Bδ‖₂`` per row of ``r``: the worst case of a linear (affine) reconstructor.

    For ``f(y) = By + b`` the error under a perturbation is ``r + Bδ`` with the residual
    ``r = BAx + b − x`` (shape ``(N, n)``, ``B`` of shape ``(n, m)``). The maximum lies on the sphere
    ``‖δ‖ = ε`` at ``δ = (μI − BᵀB)⁻¹Bᵀr`` with ``μ ≥ λ_max(BᵀB)`` solving ``‖δ(μ)‖ = ε`` (the secular
    equation of the trust-region problem, solved by bisection per row; the "hard case", where ``Bᵀr``
    has no component along the top eigenvector, fills the norm along it). With ``r = 0`` the answer is
    ``ε σ_max(B)``. Float64 inside.
    """
    check_positive(eps, "eps", allow_zero=True)
    if B.ndim != 2 or r.ndim != 2 or r.shape[1] != B.shape[0]:
        raise ValueError(f"need B (n, m) and r (N, n); got {tuple(B.shape)} and {tuple(r.shape)}")
    b, res = B.double(), r.double()
    if eps == 0:
        return res.norm(dim=1)
    lam, w = torch.linalg.eigh(b.T @ b)                    # ascending eigenvalues of BᵀB
    c = (res @ b) @ w                                      # Bᵀr in the eigenbasis, (N, m)
    top = float(lam[-1])

    def coefficients(mu: torch.Tensor) -> torch.Tensor:    # δ(μ) in the eigenbasis
        return c / (mu[:, None] - lam).clamp_min(1e-300)

    lo = torch.full((len(res),), top, dtype=b.dtype)
    hi = top + c.norm(dim=1) / eps + 1e-12 * (1 + top)     # ‖δ(hi)‖ ≤ ε: the invariant kept below
    for _ in range(iterations):
        mid = (lo + hi) / 2
        inside = coefficients(mid).norm(dim=1) <= eps
        lo, hi = torch.where(inside, lo, mid), torch.where(inside, mid, hi)
    coef = coefficients(hi)
    short = (eps**2 - (coef**2).sum(1)).clamp_min(0.0)     # the hard case: fill the norm along the top vector
    sign = torch.where(coef[:, -1] < 0, -1.0, 1.0).to(coef)
    coef[:, -1] = sign * torch.sqrt(coef[:, -1] ** 2 + short)
    delta = coef @ w.T
    return (res + delta @ b.T).norm(dim=1)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def reconstruction_step(net: nn.Module, op: MatrixOperator, x: torch.Tensor, opt: torch.optim.Optimizer, *,
                        parseval_beta: float | None = None) -> Step:
    """One plain step on the images ``x[idx]``: descend ``‖f(Ax) − x‖²`` (mean per pixel); with
    ``parseval_beta``, follow the update by :func:`parseval_retraction`."""
    dev = module_device(net)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb = x[idx].to(dev)
        loss = F.mse_loss(net(op.A(xb)), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if parseval_beta is not None:
            parseval_retraction(net, parseval_beta)
        return {"loss": float(loss.detach())}

    return step


def robust_descent(net: nn.Module, opt: torch.optim.Optimizer, y: torch.Tensor, x: torch.Tensor, delta: torch.Tensor,
                   lam: float) -> dict[str, float]:
    """One descent step of ``f`` on ``‖f(y) − x‖² + λ‖f(y + δ) − x‖²`` with the perturbation ``δ`` held fixed.

    Logs the clean loss and ``attacker_error``, the mean ``‖f(y + δ) − x‖₂`` that ``δ`` reached.
    """
    clean = F.mse_loss(net(y), x)
    adv_out = net(y + delta)
    loss = clean + lam * F.mse_loss(adv_out, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": float(clean.detach()), "attacker_error": float((adv_out - x).detach().flatten(1).norm(dim=1).mean())}


def attacker_ascent(net: nn.Module, attacker: nn.Module, y: torch.Tensor, x: torch.Tensor,
                    opt_g: torch.optim.Optimizer, steps: int = 1) -> float:
    """``steps`` Adam ascent steps of the attacker ``G`` on ``‖f(y + G(y)) − x‖²`` (mean per pixel), with
    ``f`` frozen. Returns the last gain before its update."""
    with frozen(net):
        for _ in range(steps):
            gain = F.mse_loss(net(y + attacker(y)), x)
            opt_g.zero_grad(set_to_none=True)
            (-gain).backward()
            opt_g.step()
    return float(gain.detach())


def minmax_step(net: nn.Module, attacker: nn.Module, op: MatrixOperator, x: torch.Tensor, opt: torch.optim.Optimizer,
                opt_g: torch.optim.Optimizer, *, lam: float, attacker_steps: int = 3) -> Step:
    """The paper's min-max step on the images ``x[idx]``, with ``y = Ax``.

    Max: with ``f`` frozen, ``attacker_steps`` Adam ascent steps of the attacker network ``G`` on
    ``‖f(y + G(y)) − x‖²`` (:func:`attacker_ascent`). Min: one :func:`robust_descent` step of ``f`` with
    ``δ = G(y)`` held fixed.
    """
    dev = module_device(net)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb = x[idx].to(dev)
        y = op.A(xb)
        attacker_ascent(net, attacker, y, xb, opt_g, attacker_steps)
        with torch.no_grad():
            delta = attacker(y)
        return robust_descent(net, opt, y, xb, delta, lam)

    return step


def train_attacker(net: nn.Module, op: LinearOperator, x: torch.Tensor, attacker: nn.Module, *, epochs: int = 2,
                   batch_size: int = 64, lr: float = 1e-3, seed: int = 0, progress: bool = True) -> History:
    """Train an attacker network ``G`` alone against a *frozen* reconstruction network ``f``.

    One :func:`attacker_ascent` step per mini-batch of ``x``; ``f`` is not updated. A fresh ``G`` trained
    this way after min-max training tells whether ``f`` resists attacker networks in general or only
    the one it was trained against. ``History.loss`` holds the mean gain ``‖f(y + G(y)) − x‖²`` per
    pixel per epoch; ``G`` is left in eval mode.
    """
    check_int(epochs, "epochs")
    check_positive(lr, "lr")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise ValueError("x must be a non-empty batch of images")
    dev = module_device(net)
    opt_g = torch.optim.Adam(attacker.parameters(), lr=lr)
    was_training = net.training
    net.eval()

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb = x[idx].to(dev)
        return {"loss": attacker_ascent(net, attacker, op.A(xb), xb, opt_g)}

    try:
        return train_loop(step, [attacker], generator=torch.Generator().manual_seed(seed), n=len(x),
                          batch_size=batch_size, epochs=epochs, desc="training a fresh attacker", progress=progress)
    finally:
        net.train(was_training)


def pga_step(net: nn.Module, op: MatrixOperator, x: torch.Tensor, opt: torch.optim.Optimizer, *, eps: float, lam: float,
             pga_steps: int, generator: torch.Generator) -> Step:
    """The reference step: like :func:`minmax_step`, with ``δ`` found per image by :func:`pga_perturbation`."""
    dev = module_device(net)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb = x[idx].to(dev)
        y = op.A(xb)
        with frozen(net):
            delta = pga_perturbation(net, y, xb, eps, steps=pga_steps, generator=generator)[0]
        return robust_descent(net, opt, y, xb, delta.detach(), lam)

    return step


def robust_validation_score(net: nn.Module, op: LinearOperator, x: torch.Tensor, eps: float, *, lam: float = 1.0,
                            steps: int = 10, generator: torch.Generator | None = None) -> float:
    """The min-max objective on held-out images: the mean of ``‖f(Ax) − x‖² + λ Δ_max(x; ε)²``.

    The inner maximum is :func:`worst_case_error` with ``steps`` PGA steps. A network that is robust but
    useless (a constant output) scores badly through the first term, a fragile one through the second.
    """
    check_positive(lam, "lam", allow_zero=True)
    with torch.no_grad():
        clean = reconstruction_error(net, op.A(x), x)
    worst = worst_case_error(net, op, x, eps, steps=steps, generator=generator)
    return float((clean**2 + lam * worst**2).mean())


def tune_regulariser(make_net, op: MatrixOperator, x_train: torch.Tensor, x_val: torch.Tensor, scheme: str,
                     values: list[float], *, epochs: int = 2, eps: float = 1.0, lam: float = 1.0, steps: int = 10,
                     seed: int = 0, progress: bool = False) -> tuple[float, dict[float, float]]:
    """Choose the strength of a regularised baseline on a validation split.

    For each value (``weight_decay`` for ``scheme="weight_decay"``, ``parseval_beta`` for
    ``"parseval"``), train ``make_net()`` with :func:`train_reconstruction` on ``x_train`` and score it
    on ``x_val`` by :func:`robust_validation_score` (budget ``eps``, weight ``lam``). A Parseval ``β``
    for which the retraction would diverge on the untrained network (:func:`check_parseval_stable`) is
    skipped. Returns the value with the lowest score and the scores of the values tried.
    """
    check_choice(scheme, "scheme", ("weight_decay", "parseval"))
    if not values:
        raise ValueError("values must list at least one strength")
    scores = {}
    for value in values:
        torch.manual_seed(seed)
        net = make_net()
        if scheme == "parseval":
            try:
                check_parseval_stable(net, float(value))
            except ValueError:
                continue
        key = "weight_decay" if scheme == "weight_decay" else "parseval_beta"
        train_reconstruction(net, op, x_train, scheme=scheme, epochs=epochs, seed=seed, progress=progress,
                             **{key: float(value)})
        scores[value] = robust_validation_score(net, op, x_val, eps, lam=lam, steps=steps,
                                                generator=torch.Generator().manual_seed(seed))
    if not scores:
        raise ValueError(f"every Parseval beta in {values} diverges on this network")
    return min(scores, key=scores.get), scores


def train_reconstruction(
    net: nn.Module,
    op: MatrixOperator,
    x: torch.Tensor,
    *,
    scheme: str = "plain",
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    parseval_beta: float = 3e-4,
    eps: float = 1.0,
    lam: float = 1.0,
    attacker: nn.Module | None = None,
    attacker_lr: float = 1e-3,
    attacker_steps: int = 3,
    pga_steps: int = 5,
    seed: int = 0,
    lr_decay: bool = False,
    progress: bool = True,
) -> History:
    """Train the reconstruction network ``net`` on images ``x`` measured by ``op``, with Adam.

    Schemes (the paper's comparison has the first four; the fifth, ``"pga"``, is a reference):

    - ``"plain"``: minimise ``‖f(Ax) − x‖²`` (:func:`reconstruction_step`);
    - ``"weight_decay"``: the same plus ``weight_decay · ‖W‖²/2`` on every parameter;
    - ``"parseval"``: plain steps, each followed by :func:`parseval_retraction` with ``parseval_beta``;
    - ``"minmax"``: :func:`minmax_step` against the attacker ``G`` (default: a :class:`PerturbationNet`
      of radius ``eps``, initialised from ``seed``), ``attacker_steps`` ascent steps per mini-batch;
    - ``"pga"`` (a reference, the paper's "ideal" formulation): :func:`pga_step`, ``δ`` found per image
      by ``pga_steps`` steps of projected gradient ascent instead of by an attacker network.

    ``lr_decay=True`` decays both learning rates to zero along a cosine over the run (default: constant).
    Losses are mean squared errors per pixel. The network is left in eval mode. The
    :class:`~companion.train.History` holds ``loss`` (clean) per epoch and, for the min-max and PGA
    schemes, ``attacker_error``: the mean ``‖f(y + δ) − x‖₂`` the training perturbation reached.
    """
    check_choice(scheme, "scheme", SCHEMES)
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    check_positive(lam, "lam", allow_zero=True)
    check_positive(eps, "eps")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    check_positive(attacker_lr, "attacker_lr")
    check_int(attacker_steps, "attacker_steps")
    check_int(pga_steps, "pga_steps")
    if attacker is not None and scheme != "minmax":
        raise ValueError(f"an attacker network is only used by scheme='minmax', not {scheme!r}")
    if attacker is not None and getattr(attacker, "eps", eps) != eps:
        raise ValueError(f"the attacker's budget ({attacker.eps}) differs from eps ({eps})")
    if scheme == "parseval":
        check_parseval_stable(net, parseval_beta)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise ValueError("x must be a non-empty batch of images")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay if scheme == "weight_decay" else 0.0)
    modules = [net]
    if scheme == "minmax":
        if attacker is None:
            with torch.random.fork_rng(devices=[]):     # a seeded initialisation that leaves the caller's RNG alone
                torch.manual_seed(seed)
                attacker = PerturbationNet(op.m, eps).to(module_device(net))
        opt_g = torch.optim.Adam(attacker.parameters(), lr=attacker_lr)
        step = minmax_step(net, attacker, op, x, opt, opt_g, lam=lam, attacker_steps=attacker_steps)
        modules.append(attacker)
    elif scheme == "pga":
        step = pga_step(net, op, x, opt, eps=eps, lam=lam, pga_steps=pga_steps, generator=gen)
    else:
        step = reconstruction_step(net, op, x, opt, parseval_beta=parseval_beta if scheme == "parseval" else None)
    if lr_decay:
        step = _with_cosine_decay(step, [opt] + ([opt_g] if scheme == "minmax" else []),
                                  epochs * -(-len(x) // batch_size))
    return train_loop(step, modules, generator=gen, n=len(x), batch_size=batch_size, epochs=epochs,
                      desc=f"training ({scheme})", progress=progress)


def _with_cosine_decay(step: Step, optimisers: list[torch.optim.Optimizer], total: int) -> Step:
    """``step`` followed by one step of a cosine learning-rate decay (to zero after ``total`` steps)."""
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, total) for o in optimisers]

    def decayed(idx: torch.Tensor | None) -> dict[str, float]:
        logged = step(idx)
        for sched in schedulers:
            sched.step()
        return logged

    return decayed

"""Adversarially robust image reconstruction (Raj, Bresler and Li, ICML 2020).

A reconstruction network ``f`` maps measurements ``y = A x`` back to images. Its robustness is judged
by the worst reconstruction error over perturbations ``δ`` of the *measurements* with ``‖δ‖₂ ≤ ε``
(:func:`worst_case_error`, projected gradient ascent). trains ``f`` in five
ways (:func:`train_reconstruction`): plainly, with weight decay, as a Parseval network (:func:`parseval_retraction`) or by the paper's
min-max game against an attacker network ``G(y)`` (:class:`PerturbationNet`).

For a one-layer linear ``f(y) = B y`` the min-max problem has a closed form, a singular-value-filtered
pseudo-inverse (:func:`filtered_pinv`); :func:`minmax_objective`, :func:`fit_linear_analytic` and
:func:`fit_linear_alternating` let the chapter check it numerically.
"""
from __future__ import annotations

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


def pga_perturbation(net: nn.Module, y: torch.Tensor, x: torch.Tensor, eps: float, *, steps: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of projected gradient ascent on ``‖f(y + δ) − x‖²`` over ``‖δ‖₂ ≤ ε``.

    Starts on the sphere of radius ``0.1ε`` and takes ``steps`` normalised gradient steps of length
    ``2.5ε/steps``, each followed by projection onto the ball. Returns, per image, the iterate ``δ``
    with the largest ℓ2 error and that error.
    """
    delta = torch.randn(y.shape, generator=generator).to(y)
    delta = 0.1 * eps * delta / per_sample_norms(delta)
    best = torch.full((len(y),), -1.0, dtype=y.dtype, device=y.device)
    best_delta = delta.clone()
    for step_index in range(steps + 1):
        delta.requires_grad_(step_index < steps)
        err = reconstruction_error(net, y + delta, x)
        better = err.detach() > best
        best = torch.where(better, err.detach(), best)
        best_delta = torch.where(better.view(-1, *([1] * (delta.ndim - 1))), delta.detach(), best_delta)
        if step_index == steps:
            break
        (grad,) = torch.autograd.grad((err**2).sum(), delta)
        delta = ascent_step(delta.detach(), grad, 2.5 * eps / steps, lambda v: project_l2_ball(v, eps))
    return best_delta, best


def worst_case_error(net: nn.Module, op: LinearOperator, x: torch.Tensor, eps: float, *, steps: int = 20,
                     restarts: int = 1, generator: torch.Generator | None = None,
                     batch_size: int = 512) -> torch.Tensor:
    """``Δ_max(x; ε) = max_{‖δ‖₂≤ε} ‖f(Ax + δ) − x‖₂`` per image, by projected gradient ascent.

    ``op`` is any :class:`~companion.inverse.LinearOperator` (a dense matrix, a CT projector, ...);
    ``‖δ‖₂`` is taken per sample, whatever the shape of the measurements.

    Runs :func:`pga_perturbation` ``restarts`` times and returns the largest error seen over all
    iterates, restarts and the clean input (a lower bound on the true maximum). ``ε = 0`` gives the
    clean error.
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
                best = torch.maximum(best, pga_perturbation(net, y, xb, eps, steps=steps, generator=gen)[1])
        out.append(best)
    net.train(was_training)
    return torch.cat(out)


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


def minmax_step(net: nn.Module, attacker: nn.Module, op: MatrixOperator, x: torch.Tensor, opt: torch.optim.Optimizer,
                opt_g: torch.optim.Optimizer, *, lam: float, attacker_steps: int = 3) -> Step:
    """The paper's min-max step on the images ``x[idx]``, with ``y = Ax``.

    Max: with ``f`` frozen, ``attacker_steps`` Adam ascent steps of the attacker network ``G`` on
    ``‖f(y + G(y)) − x‖²``. Min: one :func:`robust_descent` step of ``f`` with ``δ = G(y)`` held fixed.
    """
    dev = module_device(net)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb = x[idx].to(dev)
        y = op.A(xb)
        with frozen(net):
            for _ in range(attacker_steps):
                gain = F.mse_loss(net(y + attacker(y)), xb)
                opt_g.zero_grad(set_to_none=True)
                (-gain).backward()
                opt_g.step()
            with torch.no_grad():
                delta = attacker(y)
        return robust_descent(net, opt, y, xb, delta, lam)

    return step


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
    return train_loop(step, modules, generator=gen, n=len(x), batch_size=batch_size, epochs=epochs,
                      desc=f"training ({scheme})", progress=progress)

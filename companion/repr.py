"""RePr (Prakash et al., CVPR 2019; seed 002, ch. 5): train, prune the overlapping filters, retrain, bring
them back orthogonal, repeat.

* :class:`VanillaConvNet`: the paper's ``C^n(X)`` (``n`` convolutions of ``X`` filters with ReLU, then one
  fully connected layer), as ``members`` independent networks in one module: one step trains several
  seeds and schemes on the same mini-batch, which is what paired comparisons need. Dropped filters are switched off by a channel mask on the
  convolution's *output*, never by zeroing gradients (momentum and weight decay would still move them).
* :func:`ortho_scores` (eq. 5.1-5.2), :func:`ortho_sum`, and the other rankings of the paper's Table 5.1
  (:data:`RANKINGS`, :func:`filter_importance`), the Oracle among them.
* :func:`select_drops` (global ranking, a per-layer cap), :func:`orthogonal_reinit` (the returned filters
  orthogonal to the kept ones, with their optimizer state and BatchNorm parameters reset).
* :class:`RePrSchedule` (the S1/S2/N schedule of Algorithm 3 as the ``on_epoch_end`` hook of the one
  training loop), :func:`ensemble_step` and :func:`train_repr`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_choice, check_int, check_positive
from .train import History, Step, module_device, train_loop

__all__ = ["RANKINGS", "DropEvent", "RePrSchedule", "VanillaConvNet", "ensemble_step", "filter_importance",
           "make_optimizer", "member_accuracy", "ortho_scores", "ortho_sum", "orthogonal_reinit", "select_drops",
           "train_repr"]

# Table 5.1's rankings. Every one is turned into an importance (higher = keep) by filter_importance.
RANKINGS = ("ortho", "random", "weight", "activation", "apoz", "gradient", "taylor", "hessian", "oracle")


class VanillaConvNet(nn.Module):
    """``C^n(X)``: ``[conv k×k (X filters) → ReLU (→ 2×2 max-pool)]^n → FC``, ``members`` networks in one.

    Member ``e`` is initialised from ``torch.Generator().manual_seed(init_seeds[e])`` (He-normal filters,
    zero biases; PyTorch's smaller default left the cluttered task stuck at chance for many epochs), so two members with the same seed start identical: the pairing of a paired-seed
    comparison. ``forward`` maps ``(B, C, H, W)`` to logits ``(B, members, classes)``. The paper's network
    has no pooling; its author's code pools after every convolution, which makes the book's runs 4-16×
    cheaper (``pool=True``, the default here). ``mask[l]`` ``(members, width)`` switches filters off.
    """

    def __init__(self, depth: int = 3, width: int = 16, *, init_seeds: Sequence[int] = (0,), in_channels: int = 1,
                 classes: int = 10, input_size: int = 32, kernel: int = 3, pool: bool = True,
                 batchnorm: bool = False) -> None:
        super().__init__()
        self.depth, self.width = check_int(depth, "depth"), check_int(width, "width")
        self.members = check_int(len(init_seeds), "number of init_seeds")
        self.kernel, self.pool, self.classes = check_int(kernel, "kernel"), pool, check_int(classes, "classes")
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same-size convolutions), got {kernel}")
        side = check_int(input_size, "input_size")
        if pool and side % 2 ** depth:
            raise ValueError(f"input_size {side} must be divisible by 2**depth = {2 ** depth} when pooling")
        E, chans = self.members, [check_int(in_channels, "in_channels")] + [width] * depth
        self.convs = nn.ModuleList(nn.Conv2d(E * chans[i], E * width, kernel, padding=kernel // 2, groups=E)
                                   for i in range(depth))
        self.norms = nn.ModuleList(nn.BatchNorm2d(E * width) if batchnorm else nn.Identity() for _ in range(depth))
        for i in range(depth):
            self.register_buffer(f"mask{i}", torch.ones(E, width))
        self.features = width * (side // 2 ** depth if pool else side) ** 2
        self.fc_weight = nn.Parameter(torch.empty(E, classes, self.features))
        self.fc_bias = nn.Parameter(torch.empty(E, classes))
        with torch.no_grad():
            for e, seed in enumerate(init_seeds):
                g = torch.Generator().manual_seed(int(seed))
                for conv, c_in in zip(self.convs, chans):
                    rows = slice(e * width, (e + 1) * width)
                    conv.weight[rows].normal_(0.0, math.sqrt(2 / (c_in * kernel * kernel)), generator=g)
                    conv.bias[rows].zero_()
                bound = 1 / math.sqrt(self.features)
                self.fc_weight[e].uniform_(-bound, bound, generator=g)
                self.fc_bias[e].zero_()

    def mask(self, layer: int) -> torch.Tensor:
        """The channel mask of convolution ``layer``, ``(members, width)``; 0 = dropped."""
        return getattr(self, f"mask{layer}")

    def filters(self, layer: int) -> torch.Tensor:
        """The filters of convolution ``layer`` as flat vectors, ``(members, width, k·k·c)`` (a view)."""
        return self.convs[layer].weight.view(self.members, self.width, -1)

    def forward(self, x: torch.Tensor, *, activations: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits ``(B, members, classes)``. ``activations``, if given, receives for each layer the list of the
        members' masked ReLU outputs ``(B, width, H, W)`` (before pooling), still in the graph.

        The members run one after the other on their slices of the shared parameters: on a CPU, PyTorch's
        grouped convolution is several times slower than this loop."""
        W, pad = self.width, self.kernel // 2
        if activations is not None:
            activations.extend([] for _ in range(self.depth))
        logits = []
        for e in range(self.members):
            rows, h = slice(e * W, (e + 1) * W), x
            for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
                h = F.conv2d(h, conv.weight[rows], conv.bias[rows], padding=pad)
                if isinstance(norm, nn.BatchNorm2d):
                    h = F.batch_norm(h, norm.running_mean[rows], norm.running_var[rows], norm.weight[rows],
                                     norm.bias[rows], self.training, norm.momentum or 0.1, norm.eps)
                h = F.relu(h * self.mask(i)[e].reshape(1, -1, 1, 1))
                if activations is not None:
                    activations[i].append(h)
                if self.pool:
                    h = F.max_pool2d(h, 2)
            logits.append(h.flatten(1) @ self.fc_weight[e].T + self.fc_bias[e])
        return torch.stack(logits, 1)


def member_accuracy(model: VanillaConvNet, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Each member's accuracy on ``(x, y)``, ``(members,)``."""
    dev = module_device(model)
    with torch.no_grad():
        hits = sum((model(x[i: i + batch_size].to(dev)).argmax(-1).cpu() == y[i: i + batch_size, None]).sum(0)
                   for i in range(0, len(x), batch_size))
    return hits.float() / len(x)                                         # type: ignore[union-attr]


def ortho_scores(w: torch.Tensor, *, normalise: str = "row", aggregate: str = "abs_sum") -> torch.Tensor:
    """Inter-filter overlap ``O`` of each filter (eq. 5.1-5.2) for filters ``w`` ``(..., J, d)``; high = overlaps.

    The paper's text (the defaults): rows scaled to unit length, ``P = |Ŵ Ŵᵀ − I|``, ``O_f = Σ_j P[f, j] / J``.
    Its author's code: the whole matrix divided by its Frobenius norm (``normalise="frobenius"``) and the
    absolute value of the *signed* mean of the off-diagonal projections (``aggregate="abs_of_signed_mean"``).
    """
    check_choice(normalise, "normalise", ("row", "frobenius"))
    check_choice(aggregate, "aggregate", ("abs_sum", "abs_of_signed_mean"))
    if w.dim() < 2 or w.shape[-2] < 2:
        raise ValueError(f"need at least two filters as rows (..., J, d), got shape {tuple(w.shape)}")
    J = w.shape[-2]
    if normalise == "row":
        w_hat = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    else:
        w_hat = w / w.flatten(-2).norm(dim=-1)[..., None, None].clamp_min(1e-12)
    gram = w_hat @ w_hat.transpose(-1, -2)
    off = gram * (1 - torch.eye(J, dtype=w.dtype, device=w.device))
    if aggregate == "abs_sum":
        return off.abs().sum(-1) / J
    return (off.sum(-1) / (J - 1)).abs()


def ortho_sum(model: VanillaConvNet, *, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Fig. 5.9's overlap of a whole network: the sum of :func:`ortho_scores` over the filters of ``layers``
    (all by default), per member ``(members,)``. Lower = more nearly orthogonal filters."""
    layers = range(model.depth) if layers is None else layers
    with torch.no_grad():
        return sum(ortho_scores(model.filters(i)).sum(-1) for i in layers)  # type: ignore[return-value]


def _hessian_diagonal(loss: torch.Tensor, params: list[torch.Tensor], probes: int,
                      generator: torch.Generator) -> list[torch.Tensor]:
    """Hutchinson's estimate of diag(∂²loss/∂θ²): the mean of ``v ⊙ Hv`` over Rademacher probes ``v``."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    diag = [torch.zeros_like(p) for p in params]
    for _ in range(probes):
        vs = [torch.randint(0, 2, p.shape, generator=generator).to(p) * 2 - 1 for p in params]
        hvs = torch.autograd.grad(grads, params, vs, retain_graph=True)
        for d, v, hv in zip(diag, vs, hvs):
            d += v * hv / probes
    return diag


def filter_importance(model: VanillaConvNet, ranking: str, *, data: tuple[torch.Tensor, torch.Tensor] | None = None,
                      generator: torch.Generator | None = None, hessian_probes: int = 8) -> list[torch.Tensor]:
    """How much each filter matters under ``ranking`` (one of :data:`RANKINGS`): per layer ``(members, width)``,
    higher = keep. Filters already masked are ranked as they are (a schedule ranks full networks only).

    * ``ortho``: ``−O`` (:func:`ortho_scores`); ``weight``: the filter's L2 norm; ``random``: uniform noise;
    * on a batch ``data = (x, y)``: ``activation`` (mean ReLU output), ``apoz`` (minus the share of zero
      outputs), ``gradient`` (the mean absolute ∂L/∂a), ``taylor`` (Molchanov et al.: the absolute value of
      the mean over positions of a·∂L/∂a, averaged over images), ``hessian`` (optimal brain damage: ½ Σ diag(H) w² over the filter's weights,
      diag(H) by Hutchinson's estimator);
    * ``oracle``: the greedy Oracle, the rise of the loss on ``data`` (a validation split) when the filter
      alone is switched off. The paper measures the accuracy drop; on a few hundred images most filters tie
      at 0, so the loss, its continuous counterpart, ranks them.
    """
    check_choice(ranking, "ranking", RANKINGS)
    E, W, dev = model.members, model.width, module_device(model)
    if ranking == "ortho":
        with torch.no_grad():
            return [-ortho_scores(model.filters(i)) for i in range(model.depth)]
    if ranking == "weight":
        with torch.no_grad():
            return [model.filters(i).norm(dim=-1) for i in range(model.depth)]
    if ranking == "random":
        if generator is None:
            raise ValueError("the random ranking needs a seeded generator")
        return [torch.rand(E, W, generator=generator).to(dev) for _ in range(model.depth)]
    if data is None:
        raise ValueError(f"the {ranking!r} ranking needs data=(x, y)")
    x, y = data[0].to(dev), data[1].to(dev)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:   # (members,): each member's mean cross-entropy
        return F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(E), reduction="none").view(-1, E).mean(0)

    was_training = model.training
    model.eval()
    try:
        if ranking == "oracle":
            out = []
            with torch.no_grad():
                base = loss_of(model(x))
                for i in range(model.depth):
                    rise = torch.zeros(E, W, device=dev)
                    mask = model.mask(i)
                    saved = mask.clone()
                    for j in range(W):
                        mask[:, j] = 0
                        rise[:, j] = loss_of(model(x)) - base
                        mask.copy_(saved)
                    out.append(rise)
            return out
        if ranking == "hessian":
            if generator is None:
                raise ValueError("the hessian ranking needs a seeded generator (Hutchinson's probes)")
            weights = [conv.weight for conv in model.convs]
            diag = _hessian_diagonal(loss_of(model(x)).sum(), weights, hessian_probes, generator)
            return [(0.5 * d * w.detach() ** 2).view(E, W, -1).sum(-1) for d, w in zip(diag, weights)]
        per_member: list[list[torch.Tensor]] = []
        logits = model(x, activations=per_member)
        flat = [a for layer in per_member for a in layer]
        acts = [torch.stack(layer, 1).detach() for layer in per_member]      # (B, E, W, H, W) per layer
        if ranking in ("activation", "apoz"):
            if ranking == "activation":
                return [a.mean((0, 3, 4)) for a in acts]
            return [-(a <= 0).float().mean((0, 3, 4)) for a in acts]
        g_flat = torch.autograd.grad(loss_of(logits).sum(), flat)
        grads = [torch.stack(g_flat[i * E: (i + 1) * E], 1) for i in range(model.depth)]
        with torch.no_grad():
            if ranking == "gradient":
                return [g.abs().mean((0, 3, 4)) * len(x) for g in grads]
            return [(a * g).mean((3, 4)).abs().mean(0) * len(x) for a, g in zip(acts, grads)]
    finally:
        model.train(was_training)


def select_drops(importance: Sequence[torch.Tensor], fraction: float, *, layers: Sequence[int],
                 max_layer_share: float = 0.5) -> list[torch.Tensor]:
    """The filters to drop: for each member, the ``fraction`` least important filters of ``layers`` ranked
    together (a global ranking, Algorithm 3 line 6), no layer losing more than ``max_layer_share`` of its
    filters. Returns per layer a bool ``(members, width)`` (all False outside ``layers``)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if not 0 < max_layer_share < 1:
        raise ValueError(f"max_layer_share must be in (0, 1), got {max_layer_share}")
    layers = sorted(set(layers))
    if not layers or min(layers) < 0 or max(layers) >= len(importance):
        raise ValueError(f"layers must be a non-empty subset of 0..{len(importance) - 1}, got {layers}")
    E, W = importance[0].shape
    cap = int(max_layer_share * W)
    scores = torch.cat([importance[i].float().cpu() for i in layers], dim=1)     # (E, len(layers)·W)
    n_drop = round(fraction * scores.shape[1])
    if n_drop > cap * len(layers):
        raise ValueError(f"cannot drop {n_drop} filters with at most {cap} per layer")
    drops = [torch.zeros(E, W, dtype=torch.bool) for _ in importance]
    for e in range(E):
        taken = dict.fromkeys(layers, 0)
        for flat in torch.argsort(scores[e], stable=True).tolist():
            if sum(taken.values()) == n_drop:
                break
            layer, j = layers[flat // W], flat % W
            if taken[layer] < cap:
                drops[layer][e, j] = True
                taken[layer] += 1
    return drops


def _reset_optimizer_state(optimizer: torch.optim.Optimizer | None, p: torch.Tensor, index: tuple) -> None:
    for buf in (optimizer.state.get(p, {}) if optimizer is not None else {}).values():
        if isinstance(buf, torch.Tensor) and buf.shape == p.shape:
            buf[index] = 0


def orthogonal_reinit(model: VanillaConvNet, layer: int, member: int, dropped: torch.Tensor, previous: torch.Tensor,
                      generator: torch.Generator, optimizer: torch.optim.Optimizer | None = None, *,
                      downstream: str = "zero") -> None:
    """Bring back the filters ``dropped`` (indices) of ``member`` in ``layer``, orthogonal to the filters it kept
    and, where the dimension allows, to their own ``previous`` values (the CVPR version of the paper); then
    unmask them. New directions: Gaussian vectors projected off that span and orthonormalised, scaled to the
    kept filters' mean norm. Bias, BatchNorm affine and running statistics and the optimizer's state of those
    channels are reset (Algorithm 3, lines 10-12).

    ``downstream``: what happens to the weights that *read* the returning channels (the next convolution's,
    or the classifier's for the last layer), which the paper does not say. ``"keep"`` leaves them as they
    were trained for the dropped filters, so the new random features enter the network at full strength;
    ``"zero"`` (the default) sets them and their optimizer state to zero, so each returning filter starts
    silent and grows in as the next layer learns to use it."""
    check_choice(downstream, "downstream", ("keep", "zero"))
    W = model.width
    idx = torch.as_tensor(dropped, dtype=torch.long).flatten()
    if len(idx) == 0:
        return
    conv = model.convs[layer]
    if len(idx) > conv.weight[0].numel():
        raise ValueError(f"cannot re-initialise {len(idx)} filters of dimension {conv.weight[0].numel()} orthogonally")
    rows = member * W + idx.to(conv.weight.device)
    with torch.no_grad():
        w = model.filters(layer)[member]                                   # (W, d)
        keep = torch.ones(W, dtype=torch.bool)
        keep[idx] = False
        kept = w[keep.to(w.device)].double().cpu()
        d = w.shape[1]
        span = torch.cat([kept, previous.double().cpu()]) if len(kept) + 2 * len(idx) <= d else kept
        basis = torch.linalg.svd(span, full_matrices=False)[2] if len(span) else torch.zeros(0, d, dtype=torch.double)
        basis = basis[: min(len(span), d)]
        v = torch.randn(len(idx), d, generator=generator, dtype=torch.double)
        if len(basis) + len(idx) <= d:
            v = v - (v @ basis.T) @ basis
        v = torch.linalg.qr(v.T)[0].T                                      # orthonormal rows
        scale = kept.norm(dim=1).mean() if len(kept) else torch.tensor(1.0, dtype=torch.double)
        conv.weight.view(-1, d)[rows] = (v * scale).to(conv.weight)
        conv.bias[rows] = 0
        norm = model.norms[layer]
        if isinstance(norm, nn.BatchNorm2d):
            norm.weight[rows], norm.bias[rows] = 1.0, 0.0
            norm.running_mean[rows], norm.running_var[rows] = 0.0, 1.0
        for p in (conv.weight, conv.bias) + ((norm.weight, norm.bias) if isinstance(norm, nn.BatchNorm2d) else ()):
            _reset_optimizer_state(optimizer, p, (rows,))
        if downstream == "zero":
            reader = member * W + torch.arange(W, device=rows.device)
            if layer + 1 < model.depth:
                weight, index = model.convs[layer + 1].weight, (reader[:, None], idx.to(rows.device)[None, :])
            else:
                area = model.features // W
                cols = (idx.to(rows.device)[:, None] * area + torch.arange(area, device=rows.device)).flatten()
                weight, index = model.fc_weight, (member, slice(None), cols)
            weight[index] = 0
            _reset_optimizer_state(optimizer, weight, index)
        model.mask(layer)[member, idx.to(model.mask(layer).device)] = 1.0


@dataclass
class DropEvent:
    """One prune of a :class:`RePrSchedule`: after ``epoch`` epochs, the filters ``dropped[layer]`` (bool
    ``(members, width)``) were switched off; ``test_before``/``test_after`` each member's test accuracy."""

    epoch: int
    dropped: list[torch.Tensor]
    test_before: torch.Tensor
    test_after: torch.Tensor

    def per_layer(self) -> torch.Tensor:
        """Filters dropped per member and layer, ``(members, depth)``."""
        return torch.stack([d.sum(1) for d in self.dropped], 1)


@dataclass
class RePrSchedule:
    """Algorithm 3 as the ``on_epoch_end`` hook of :func:`companion.train.train_loop`.

    ``rankings[e]`` is member ``e``'s ranking (one of :data:`RANKINGS`) or ``None`` for standard training.
    After ``s1`` epochs of the full network, each RePr member drops the ``fraction`` least important filters
    of ``rank_layers`` (all but the first by default); after ``s2`` more epochs they come back orthogonal
    (:func:`orthogonal_reinit`). ``cycles`` times, then plain training to the end. Every epoch logs each
    member's test accuracy and :func:`ortho_sum`; ``events`` keeps the drops.
    """

    model: VanillaConvNet
    rankings: Sequence[str | None]
    test: tuple[torch.Tensor, torch.Tensor]
    s1: int = 6
    s2: int = 3
    cycles: int = 3
    fraction: float = 0.3
    rank_layers: Sequence[int] | None = None
    max_layer_share: float = 0.5
    rank_data: tuple[torch.Tensor, torch.Tensor] | None = None
    oracle_data: tuple[torch.Tensor, torch.Tensor] | None = None
    seed: int = 0
    downstream: str = "zero"
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0
    events: list[DropEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.rankings) != self.model.members:
            raise ValueError(f"give one ranking (or None) per member: {self.model.members}, got {len(self.rankings)}")
        for r in self.rankings:
            if r is not None:
                check_choice(r, "ranking", RANKINGS)
        check_int(self.s1, "s1"), check_int(self.s2, "s2"), check_int(self.cycles, "cycles", minimum=0)
        if self.rank_layers is None:
            self.rank_layers = list(range(1, self.model.depth)) if self.model.depth > 1 else [0]
        self.generator = torch.Generator().manual_seed(self.seed)
        self._pending: list[torch.Tensor] | None = None
        self._previous: list[torch.Tensor] = []

    @property
    def drop_epochs(self) -> list[int]:
        """The epochs after which filters are dropped."""
        return [self.s1 + k * (self.s1 + self.s2) for k in range(self.cycles)]

    def _drop(self, before: torch.Tensor) -> None:
        """Switch off the filters each RePr member ranks lowest; ``before``: the members' test accuracy now."""
        m, E, dev = self.model, self.model.members, module_device(self.model)
        drops = [torch.zeros(E, m.width, dtype=torch.bool) for _ in range(m.depth)]
        for ranking in sorted({r for r in self.rankings if r is not None}):
            data = self.oracle_data if ranking == "oracle" else self.rank_data
            chosen = select_drops(filter_importance(m, ranking, data=data, generator=self.generator),
                                  self.fraction, layers=self.rank_layers, max_layer_share=self.max_layer_share)
            use = torch.tensor([r == ranking for r in self.rankings])
            for d, c in zip(drops, chosen):
                d[use] = c[use]
        self._previous = [m.filters(i).detach().clone() for i in range(m.depth)]
        for i, d in enumerate(drops):
            m.mask(i)[d.to(dev)] = 0.0
        self._pending = drops
        self.events.append(DropEvent(self.epoch, drops, before, member_accuracy(m, *self.test)))

    def _restore(self) -> None:
        assert self._pending is not None
        for i, d in enumerate(self._pending):
            for e in range(self.model.members):
                idx = d[e].nonzero().flatten()
                orthogonal_reinit(self.model, i, e, idx, self._previous[i][e, idx.to(self._previous[i].device)],
                                  self.generator, self.optimizer, downstream=self.downstream)
        self._pending = None

    def __call__(self) -> Mapping[str, float]:
        self.epoch += 1
        acc = member_accuracy(self.model, *self.test)
        overlap = ortho_sum(self.model)
        logged = {f"test_accuracy_{e}": float(a) for e, a in enumerate(acc)}
        logged |= {f"ortho_sum_{e}": float(o) for e, o in enumerate(overlap)}
        logged["pruned"] = float(self._pending is not None)   # this epoch trained the sub-networks
        if self._pending is not None and self.epoch == self.events[-1].epoch + self.s2:
            self._restore()
        elif self.epoch in self.drop_epochs:
            self._drop(acc)
        return logged


def make_optimizer(name: str, params: Sequence[nn.Parameter] | object, *, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``"sgd"`` (plain), ``"momentum"`` (SGD with ``momentum``) or ``"adam"``: RePr is a schedule around any
    optimizer, and the paper's Fig. 5.6 compares them."""
    check_choice(name, "optimizer", ("sgd", "momentum", "adam"))
    check_positive(lr, "lr")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)   # type: ignore[arg-type]
    return torch.optim.SGD(params, lr=lr, momentum=momentum if name == "momentum" else 0.0,  # type: ignore[arg-type]
                           weight_decay=weight_decay)


def ensemble_step(model: VanillaConvNet, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Step:
    """One step of every member on the same mini-batch: the sum of the members' cross-entropies (each member's
    parameters get exactly the gradient of its own loss). Logs each member's batch accuracy."""
    dev = module_device(model)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        logits = model(xb)                                                  # (B, E, classes)
        loss = F.cross_entropy(logits.flatten(0, 1), yb.repeat_interleave(model.members)) * model.members
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hits = (logits.argmax(-1) == yb[:, None]).float().mean(0)
        return {"loss": float(loss.detach()) / model.members} | {f"train_accuracy_{e}": float(h)
                                                                  for e, h in enumerate(hits)}

    return step


def train_repr(model: VanillaConvNet, x: torch.Tensor, y: torch.Tensor, schedule: RePrSchedule, *, epochs: int,
               optimizer: str = "momentum", lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
               batch_size: int = 64, anneal_at: int | None = None, seed: int = 0, progress: bool = True,
               desc: str = "RePr") -> History:
    """Train every member of ``model`` for ``epochs`` on the same mini-batches (drawn from ``seed``), with
    ``schedule`` pruning and re-initialising the RePr members between epochs. Standard members get the
    same epochs (the sub-network epochs count toward the budget, as in the paper's Fig. 5.1). After
    ``anneal_at`` epochs, if given, the learning rate drops tenfold for everyone, so that the final
    accuracies compare settled networks rather than the noise of the last mini-batches."""
    check_int(epochs, "epochs")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    if schedule.model is not model:
        raise ValueError("the schedule belongs to another model")
    last = max(schedule.drop_epochs, default=0) + schedule.s2
    if schedule.cycles and last > epochs:
        raise ValueError(f"{schedule.cycles} cycles of s1={schedule.s1}, s2={schedule.s2} need {last} epochs, "
                         f"got {epochs}")
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule.optimizer = opt
    gen = torch.Generator().manual_seed(seed)

    def on_epoch_end() -> Mapping[str, float]:
        logged = schedule()
        if schedule.epoch == anneal_at:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        return logged

    return train_loop(ensemble_step(model, opt, x, y), [model], generator=gen, n=len(x), batch_size=batch_size,
                      epochs=epochs, on_epoch_end=on_epoch_end, desc=desc, progress=progress)

"""The book's one training loop, :func:`train_loop`, and what it returns, :class:`History`.

Every method that trains something (a classifier, a GAN, an inverter, a robust reconstruction
network, a metal-artifact-reduction network, a linear reconstructor) supplies a short *step*: a
function that takes one mini-batch of indices (or ``None`` when it draws its own data), updates its
parameters once, and returns the scalars to log. The step is the method; a chapter prints it with
``inspect.getsource``. :func:`train_loop` owns the rest: mini-batch order from a seeded generator
(never the global random state), epochs or a fixed number of steps, train/eval mode, the progress
bar, the log and the wall time. :func:`fit` is the plain classifier (or regressor) training built on
:func:`classifier_step`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._validate import check_choice, check_int, check_positive

__all__ = ["History", "Step", "adversarial_step", "classifier_step", "fit", "frozen", "module_device", "random_shift",
           "train_loop"]

Step = Callable[[torch.Tensor | None], Mapping[str, float]]


class History:
    """What one :func:`train_loop` run logged, and its wall time in ``seconds``.

    ``steps[name]``: one value per step. ``epochs[name]``: per epoch, the mean over the epoch's
    batches weighted by batch size, plus what ``on_epoch_end`` returned. ``hist.name`` reads the
    per-epoch series when there is one, otherwise the per-step series (``hist.loss``, ``hist.d_loss``).
    """

    def __init__(self) -> None:
        self.steps: dict[str, list[float]] = {}
        self.epochs: dict[str, list[float]] = {}
        self.seconds = 0.0

    def __getattr__(self, name: str) -> list[float]:
        for series in (self.__dict__.get("epochs", {}), self.__dict__.get("steps", {})):
            if name in series:
                return series[name]
        raise AttributeError(f"this training run logged no {name!r}; it logged "
                             f"{sorted(set(self.__dict__.get('epochs', {})) | set(self.__dict__.get('steps', {})))}")

    def __repr__(self) -> str:
        n = len(next(iter(self.steps.values()), []))
        return f"History({n} steps, {len(next(iter(self.epochs.values()), []))} epochs, {sorted(self.steps)}, {self.seconds:.1f} s)"


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (CPU for a module without parameters)."""
    return next(module.parameters(), torch.empty(0)).device


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn gradients off for every parameter of ``modules`` inside the block; restore each flag after, even on error."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _batches(n: int | None, batch_size: int, epochs: int | None, steps: int | None,
             generator: torch.Generator | None) -> Iterator[tuple[int, torch.Tensor | None]]:
    """``(epoch, indices)`` pairs. Epochs: a fresh permutation each, the last batch may be short.
    Steps: full batches from a permutation that is redrawn when it runs out. No data: ``indices`` is None."""
    if epochs is not None:
        assert n is not None
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, batch_size):
                yield epoch, order[i: i + batch_size]
        return
    assert steps is not None
    if n is None:
        for _ in range(steps):
            yield 0, None
        return
    order, pos = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        yield 0, order[pos: pos + batch_size]
        pos += batch_size


def train_loop(
    step: Step,
    modules: Sequence[nn.Module],
    *,
    generator: torch.Generator | None = None,
    n: int | None = None,
    batch_size: int = 1,
    epochs: int | None = None,
    steps: int | None = None,
    on_epoch_end: Callable[[], Mapping[str, float]] | None = None,
    desc: str = "training",
    progress: bool = True,
) -> History:
    """Call ``step`` once per mini-batch and return the :class:`History` of what it logged.

    Give either ``epochs`` (each a pass over a fresh permutation of ``n`` items, drawn from
    ``generator``) or ``steps`` (that many batches; full batches from a permutation redrawn when it
    runs out, or ``None`` batches when ``n`` is None and the step draws its own data from the same
    ``generator``). ``modules`` are in train mode while steps run, in eval mode for ``on_epoch_end``
    (whose values are logged per epoch) and are left in eval mode, also when a step raises.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    if epochs is not None and n is None:
        raise ValueError("training by epochs needs the number of items n")
    if n is not None:
        check_int(n, "n")
        if generator is None:
            raise ValueError("batches of items need a seeded generator (the global random state is never used)")
    check_int(batch_size, "batch_size")
    total = check_int(steps, "steps", minimum=0) if steps is not None else \
        check_int(epochs, "epochs", minimum=0) * -(-n // batch_size)   # type: ignore[operator]
    hist = History()
    sums: dict[str, float] = {}
    weight = 0

    def set_mode(train: bool) -> None:
        for m in modules:
            m.train(train)

    def close_epoch() -> None:
        nonlocal sums, weight
        set_mode(False)
        for key, value in sums.items():
            hist.epochs.setdefault(key, []).append(value / weight)
        for key, value in (on_epoch_end() if on_epoch_end is not None else {}).items():
            hist.epochs.setdefault(key, []).append(float(value))
        sums, weight = {}, 0

    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not progress, mininterval=1.0)
    current = 0
    try:
        set_mode(True)
        for epoch, idx in _batches(n, batch_size, epochs, steps, generator):
            if epochs is not None and epoch != current:
                close_epoch()
                set_mode(True)
                current = epoch
            logged = step(idx)
            w = len(idx) if idx is not None else 1
            for key, value in logged.items():
                value = float(value)
                hist.steps.setdefault(key, []).append(value)
                if epochs is not None:
                    sums[key] = sums.get(key, 0.0) + value * w
            weight += w
            bar.update()
            if bar.n % 25 == 0 or bar.n == total:
                bar.set_postfix({k: f"{sum(v[-25:]) / len(v[-25:]):.4g}" for k, v in list(hist.steps.items())[:3]},
                                refresh=False)
        if epochs is not None and total > 0:
            close_epoch()
    finally:
        set_mode(False)
        bar.close()
    hist.seconds = time.perf_counter() - start
    return hist


def classifier_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                    generator: torch.Generator | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> Step:
    """One supervised step on the items ``idx`` of ``(x, y)``: (augment,) forward, loss, backward, update.

    Logs ``loss`` and, when ``y`` holds class labels, ``train_accuracy`` on the batch.
    """
    dev = module_device(model)
    classify = not y.is_floating_point()

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        if augment is not None:
            xb = augment(xb, generator)
        out = model(xb)
        loss = loss_fn(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        logged = {"loss": float(loss.detach())}
        if classify:
            logged["train_accuracy"] = int((out.argmax(1) == yb).sum()) / len(yb)
        return logged

    return step


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    schedule: str = "constant",
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train ``model`` with Adam on ``(x, y)`` for ``epochs`` passes (:func:`classifier_step` in :func:`train_loop`).

    Mini-batches are shuffled by a generator seeded with ``seed``, so a run is reproducible. The
    model is left in eval mode. Accuracy is tracked when ``y`` holds integer labels (``train_accuracy``
    per epoch, and ``val_accuracy`` on ``val``). ``augment``, if given, maps each input mini-batch (and
    the generator) to an augmented one, e.g. :func:`random_shift`. ``schedule="cosine"`` anneals the
    learning rate to 0 over the run, which steadies the last epochs (useful with batch normalisation).
    """
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    check_choice(schedule, "schedule", ("constant", "cosine"))
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch) if schedule == "cosine" else None
    gen = torch.Generator().manual_seed(seed)
    dev = module_device(model)

    def val_accuracy() -> dict[str, float]:
        if val is None or y.is_floating_point():
            return {}
        xv, yv = val
        with torch.no_grad():
            pred = torch.cat([model(xv[j: j + 1024].to(dev)).argmax(1).cpu() for j in range(0, len(xv), 1024)])
        return {"val_accuracy": float((pred == yv.cpu()).float().mean())}

    step = classifier_step(model, opt, x, y, loss_fn=loss_fn, augment=augment, generator=gen, scheduler=sched)
    return train_loop(step, [model], generator=gen, n=len(x), batch_size=batch_size, epochs=epochs,
                      on_epoch_end=val_accuracy, desc=desc, progress=progress)


def adversarial_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                     attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], *,
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     generator: torch.Generator | None = None,
                     scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> Step:
    """Adversarial training (Madry et al. 2018): one step on ``attack(model, x_b, y_b)`` instead of ``x_b``.

    The inner maximisation is ``attack`` (e.g. ``lambda m, x, y: pgd(m, x, y, 0.3, steps=7)``), run on the
    model as it is now (the book's attacks put it in eval mode while they run); the outer minimisation
    is one cross-entropy update on the adversarial batch. Logs ``loss`` and ``train_accuracy``
    (on the adversarial batch: the robust training accuracy).
    """
    dev = module_device(model)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        if augment is not None:
            xb = augment(xb, generator)
        xb = attack(model, xb, yb).detach()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": float(loss.detach()), "train_accuracy": int((out.argmax(1) == yb).sum()) / len(yb)}

    return step


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: float = 2.0) -> torch.Tensor:
    """Translate each image of a batch by its own random offset of up to ``max_shift`` pixels.

    A cheap augmentation (one ``grid_sample`` call for the whole batch) worth one to two points of
    test accuracy when training on the 4,000-image embedded MNIST.
    """
    b, _, h, w = x.shape
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * max_shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)

"""One small, reusable training loop."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._validate import check_choice, check_int, check_positive


@dataclass
class History:
    """Per-epoch training record: mean loss, and accuracies when the targets are class labels."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


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
    """Train ``model`` with Adam on ``(x, y)`` for ``epochs`` passes and return its :class:`History`.

    Mini-batches are shuffled by a generator seeded with ``seed``, so a run is reproducible. The
    model is left in eval mode. Accuracy is tracked when ``y`` holds integer labels. ``augment``,
    if given, maps each input mini-batch (and the generator) to an augmented one, e.g.
    :func:`random_shift`. ``schedule="cosine"`` anneals the learning rate to 0 over the run,
    which steadies the last epochs (useful for networks with batch normalisation).
    """
    import time

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
    classify = not y.is_floating_point()
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch) if schedule == "cosine" else None
    gen = torch.Generator().manual_seed(seed)
    hist = History()
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = order[i: i + batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if augment is not None:
                xb = augment(xb, gen)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
            if classify:
                correct += int((out.argmax(1) == yb).sum())
        model.eval()
        hist.loss.append(total / len(x))
        postfix = {"loss": f"{hist.loss[-1]:.4f}"}
        if classify:
            hist.train_accuracy.append(correct / len(x))
            postfix["train acc"] = f"{hist.train_accuracy[-1]:.3f}"
        if val is not None and classify:
            with torch.no_grad():
                xv, yv = val
                pred = torch.cat([model(xv[j: j + 1024].to(dev)).argmax(1).cpu() for j in range(0, len(xv), 1024)])
            hist.val_accuracy.append(float((pred == yv).float().mean()))
            postfix["val acc"] = f"{hist.val_accuracy[-1]:.3f}"
        bar.set_postfix(postfix)
    hist.seconds = time.perf_counter() - start
    return hist


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

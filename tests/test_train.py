"""The one training loop: batching, logging, modes, frozen parameters, the global random state, and that it is the only one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from companion.train import History, frozen, train_loop

PACKAGE = Path(__file__).resolve().parents[1] / "companion"


def _recording_step(seen: list[torch.Tensor | None]):
    def step(idx):
        seen.append(idx)
        return {"loss": float(len(idx)) if idx is not None else 1.0, "k": float(len(seen))}
    return step


def test_epochs_cover_every_item_once_per_epoch_and_average_by_batch_size() -> None:
    seen: list = []
    hist = train_loop(_recording_step(seen), [], generator=torch.Generator().manual_seed(0), n=10, batch_size=4,
                      epochs=2, progress=False)
    assert [len(i) for i in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (seen[:3], seen[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))            # reshuffled
    assert hist.epochs["loss"] == pytest.approx([(16 + 16 + 4) / 10] * 2)        # weighted by batch size
    assert len(hist.steps["loss"]) == 6 and hist.loss == hist.epochs["loss"] and hist.seconds >= 0


def test_steps_draw_full_batches_and_reshuffle_when_the_data_run_out() -> None:
    seen: list = []
    hist = train_loop(_recording_step(seen), [], generator=torch.Generator().manual_seed(0), n=10, batch_size=4,
                      steps=5, progress=False)
    assert [len(i) for i in seen] == [4] * 5
    assert len(set(torch.cat(seen[:2]).tolist())) == 8                          # no repeat within one permutation
    assert hist.loss == hist.steps["loss"] and not hist.epochs
    with pytest.raises(AttributeError, match="logged no 'nothing'"):
        hist.nothing


def test_data_free_steps_and_argument_errors() -> None:
    seen: list = []
    train_loop(_recording_step(seen), [], steps=3, progress=False)
    assert seen == [None, None, None]
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        train_loop(_recording_step([]), [], steps=3, epochs=1, progress=False)
    with pytest.raises(ValueError, match="seeded generator"):
        train_loop(_recording_step([]), [], n=4, steps=3, progress=False)
    with pytest.raises(ValueError, match="needs the number of items"):
        train_loop(_recording_step([]), [], epochs=1, progress=False)


def test_same_generator_seed_same_batches_and_the_global_state_is_untouched() -> None:
    runs = []
    for _ in range(2):
        seen: list = []
        torch.manual_seed(123)
        train_loop(_recording_step(seen), [], generator=torch.Generator().manual_seed(5), n=9, batch_size=3, epochs=2,
                   progress=False)
        runs.append((torch.cat(seen), torch.rand(1)))
    torch.manual_seed(123)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], torch.rand(1))


def test_modes_train_during_steps_eval_after_and_on_error() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    modes = []
    ends = []

    def step(idx):
        modes.append(net.training)
        return {}

    def on_epoch_end():
        ends.append(net.training)
        return {"metric": 1.0}

    hist = train_loop(step, [net], generator=torch.Generator().manual_seed(0), n=4, batch_size=2, epochs=2,
                      on_epoch_end=on_epoch_end, progress=False)
    assert modes == [True] * 4 and ends == [False, False] and not net.training and hist.metric == [1.0, 1.0]

    def failing(idx):
        raise RuntimeError("boom")

    net.train()
    with pytest.raises(RuntimeError, match="boom"):
        train_loop(failing, [net], steps=1, progress=False)
    assert not net.training


def test_frozen_restores_each_flag_even_on_error() -> None:
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)                          # frozen by the caller: must stay frozen
    with pytest.raises(RuntimeError):
        with frozen(net):
            assert not any(p.requires_grad for p in net.parameters())
            raise RuntimeError
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_history_repr_and_attribute_lookup() -> None:
    h = History()
    h.steps["d_loss"] = [1.0, 2.0]
    assert h.d_loss == [1.0, 2.0] and "d_loss" in repr(h)


def training_loops(package: Path) -> list[str]:
    """Functions outside ``train.py`` that build an optimiser over a module's ``.parameters()`` and call its
    ``step()`` inside a ``for``/``while`` loop of their own, and ``*History`` classes outside ``train.py``.
    (Optimisers over inputs or codes, e.g. C&W's ``w`` or a GAN projection's ``z``, are not training.)"""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "train.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("History"):
                found.append(f"{path.name}:{node.lineno} class {node.name}")
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            optimisers = {t.id for a in ast.walk(node) if isinstance(a, ast.Assign) and "optim." in ast.unparse(a.value)
                          and ".parameters()" in ast.unparse(a.value) for t in a.targets if isinstance(t, ast.Name)}
            for loop in (n for n in ast.walk(node) if isinstance(n, (ast.For, ast.While))):
                if any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "step"
                       and isinstance(c.func.value, ast.Name) and c.func.value.id in optimisers for c in ast.walk(loop)):
                    found.append(f"{path.name}:{loop.lineno} loop in {node.name}")
                    break
    return found


def test_one_training_loop_in_the_package() -> None:
    """:func:`companion.train.train_loop` is the only loop over training steps and ``History`` the only log."""
    assert training_loops(PACKAGE) == []


def test_adversarial_step_updates_on_the_attacked_batch() -> None:
    """One step of Madry et al.'s training equals a plain SGD step on ``attack(model, x_b, y_b)``."""
    from companion.train import adversarial_step

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    a = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    b = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    b.load_state_dict(a.state_dict())
    seen = []

    def attack(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        seen.append(len(xb))
        return 1 - xb

    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    idx = torch.arange(5)
    logged = adversarial_step(a, opt_a, x, y, attack)(idx)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    loss = F.cross_entropy(b(1 - x[idx]), y[idx])
    loss.backward()
    opt_b.step()
    assert seen == [5]
    assert logged["loss"] == pytest.approx(float(loss))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q)

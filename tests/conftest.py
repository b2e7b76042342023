"""Shared fixtures: a trained MNIST classifier is the common test subject of the attack/defense tests."""
from __future__ import annotations

import pytest
import torch

from companion.data import load_mnist
from companion.nets import SmallCNN
from companion.train import fit, random_shift
from companion.utils import seed_everything


@pytest.fixture(scope="session")
def mnist_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A SmallCNN trained on the embedded MNIST (eval mode) and the 1,000-image test split."""
    seed_everything(0)
    x, y = load_mnist("train")
    x_test, y_test = load_mnist("test")
    model = SmallCNN()
    fit(model, x, y, epochs=6, batch_size=32, seed=0, augment=random_shift, progress=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), x_test, y_test

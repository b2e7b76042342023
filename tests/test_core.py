"""companion.data, nets, train and utils."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from companion import seed_everything, set_threads
from companion.data import (DataNotAvailable, load_digits, load_fashion_mnist, load_mnist, load_olivetti, load_real_mnist,
                            sample_images)
from companion.nets import SmallCNN
from companion.train import fit, random_shift

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_embedded_mnist_split_is_fixed_stratified_and_disjoint() -> None:
    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert (torch.bincount(yt) == 100).all() and (torch.bincount(y) == 400).all()
    xa, _ = load_mnist("all")
    assert len(xa) == 5000
    flat = {tuple(v.flatten().tolist()[::7]) for v in xt}
    assert not any(tuple(v.flatten().tolist()[::7]) in flat for v in x[:500])
    assert torch.equal(load_mnist("test")[0], xt)
    assert len(yt[:100].unique()) == 10 and len(y[:100].unique()) == 10  # prefixes mix all classes
    with pytest.raises(ValueError, match="unknown split"):
        load_mnist("validation")


def test_bundled_small_sets() -> None:
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and float(x.max()) == 1.0 and y.max() == 9
    imgs = sample_images(("camera", "coffee"))
    assert imgs["camera"].shape == (1, 512, 512) and imgs["coffee"].shape[0] == 3
    with pytest.raises(ValueError, match="unknown image name"):
        sample_images(("lena",))


def test_real_loaders_read_files_and_fail_clearly(tmp_path) -> None:
    with pytest.raises(DataNotAvailable, match="download=True"):
        load_real_mnist("test", root=tmp_path)
    with pytest.raises(DataNotAvailable, match="FashionMNIST"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(DataNotAvailable, match="Olivetti"):
        load_olivetti(root=tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_real_mnist("dev", root=tmp_path)
    if not SHARED.exists():
        pytest.skip("shared/data (offline copies of the real sets) is not beside this checkout")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (SHARED / "mnist").iterdir():
        shutil.copy(f, raw)
    x, y = load_real_mnist("test", root=tmp_path)
    assert x.shape == (10000, 1, 28, 28) and y[:4].tolist() == [7, 2, 1, 0]
    (tmp_path / "olivetti").mkdir(exist_ok=True)
    shutil.copy(SHARED / "olivetti" / "olivettifaces.mat", tmp_path / "olivetti")
    faces, ids = load_olivetti(root=tmp_path)
    assert faces.shape == (400, 1, 64, 64) and ids.bincount().tolist() == [10] * 40


def test_small_cnn_shapes_and_bad_input() -> None:
    m = SmallCNN()
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert m.features(torch.rand(2, 1, 28, 28)).shape == (2, 128)
    with pytest.raises(ValueError, match="shape"):
        m(torch.rand(2, 3, 28, 28))
    with pytest.raises(TypeError):
        SmallCNN(width=2.5)


def test_fit_learns_and_is_reproducible() -> None:
    set_threads()
    x, y = load_digits()
    x = torch.nn.functional.interpolate(x, size=28)

    def train() -> tuple[SmallCNN, list[float]]:
        seed_everything(1)
        m = SmallCNN(width=8, hidden=32)
        h = fit(m, x[:600], y[:600], epochs=3, seed=1, progress=False, val=(x[600:900], y[600:900]))
        return m, h.loss

    m1, loss1 = train()
    _, loss2 = train()
    assert loss1 == loss2 and loss1[-1] < loss1[0]
    assert not m1.training
    with pytest.raises(ValueError, match="equal length"):
        fit(m1, x[:10], y[:9], epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(m1, x[:10], y[:10], epochs=0, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fit(m1, torch.full((4, 1, 28, 28), float("nan")), y[:4], epochs=1, progress=False)


def test_random_shift_moves_content_without_changing_shape() -> None:
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1
    out = random_shift(x, torch.Generator().manual_seed(0), max_shift=3)
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert abs(float(out.sum()) - float(x.sum())) / float(x.sum()) < 0.05


def test_seed_everything_validates() -> None:
    g = seed_everything(3)
    assert torch.rand(1, generator=g).item() == torch.rand(1, generator=torch.Generator().manual_seed(3)).item()
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_image_folder_loader(tmp_path) -> None:
    from PIL import Image

    from companion.data import load_image_folder

    with pytest.raises(DataNotAvailable, match="no images"):
        load_image_folder(tmp_path / "missing")
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((40, 60, 3)) * 255).astype("uint8")).save(tmp_path / f"{i}.png")
    x = load_image_folder(tmp_path, size=32)
    assert x.shape == (3, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1

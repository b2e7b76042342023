"""Metrics: accuracy on hand-made models, PSNR/SSIM against scikit-image, destruction rate."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from companion.metrics import accuracy, destruction_rate, predict, psnr, robust_accuracy, ssim


def brightness_model(x: torch.Tensor) -> torch.Tensor:
    """A trivial 2-class 'classifier': class 1 iff the mean intensity exceeds 0.5."""
    m = x.mean(dim=(1, 2, 3))
    return torch.stack([0.5 - m, m - 0.5], dim=1)


def test_predict_and_accuracy_of_trivial_model():
    x = torch.stack([torch.full((1, 3, 3), v) for v in (0.1, 0.2, 0.7, 0.9, 0.6)])
    y = torch.tensor([0, 1, 1, 1, 0])
    assert predict(brightness_model, x).tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(predict(brightness_model, x, batch_size=2), predict(brightness_model, x))
    assert accuracy(brightness_model, x, y) == pytest.approx(3 / 5)
    assert accuracy(brightness_model, x, y, batch_size=1) == pytest.approx(3 / 5)
    assert accuracy(lambda t: torch.zeros(len(t), 4).index_fill_(1, torch.tensor([2]), 1.0), x, y) == 0.0


def test_robust_accuracy():
    torch.manual_seed(0)
    x = torch.rand(20, 1, 4, 4)
    y = predict(brightness_model, x)
    assert robust_accuracy(brightness_model, x, y, "fgsm", eps=0.0) == 1.0
    # every image moves 0.5 against its class: the mean crosses 0.5 whatever it was
    acc, adv = robust_accuracy(brightness_model, x, y, "fgsm", eps=0.6, batch_size=7, return_adv=True)
    assert acc == 0.0 and adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    with pytest.raises(ValueError):
        robust_accuracy(brightness_model, x, y, "unknown")


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_matches_skimage(channels):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(4, channels, 16, 16, generator=g)
    x = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    expected = [peak_signal_noise_ratio(r.numpy(), a.numpy(), data_range=1.0) for r, a in zip(ref, x)]
    assert psnr(x, ref) == pytest.approx(np.mean(expected), rel=1e-6)
    assert np.allclose(psnr(x, ref, reduction="none").numpy(), expected, rtol=1e-6)
    # the data range enters as 20 log10(range): the same images on a 0-255 scale give the same PSNR
    assert psnr(255 * x, 255 * ref, data_range=255) == pytest.approx(psnr(x, ref), rel=1e-6)


def test_psnr_of_identical_images_is_inf():
    x = torch.rand(3, 1, 8, 8)
    assert psnr(x, x) == math.inf
    y = x.clone()
    y[0] += 0.01
    per = psnr(y, x, reduction="none")
    assert math.isfinite(per[0]) and per[1:].isinf().all()


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage(channels):
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(3, channels, 20, 24, generator=g)
    x = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    axis = 0 if channels > 1 else None
    expected = [
        structural_similarity(r.numpy() if axis == 0 else r[0].numpy(), a.numpy() if axis == 0 else a[0].numpy(),
                              data_range=1.0, channel_axis=axis)
        for r, a in zip(ref, x)
    ]
    assert ssim(x, ref) == pytest.approx(np.mean(expected), rel=1e-6)
    assert np.allclose(ssim(x, ref, reduction="none").numpy(), expected, rtol=1e-6)
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(x, ref) < 1.0


def test_destruction_rate_hand_made():
    # images:        0     1     2      3      4      5
    clean = torch.tensor([True, True, True, True, False, True])
    adv = torch.tensor([False, False, False, True, False, False])
    defended = torch.tensor([True, False, True, True, True, False])
    # clean-correct and fooled: images 0, 1, 2, 5; the defense recovers 0 and 2 (4 was never correct)
    assert destruction_rate(clean, adv, defended) == pytest.approx(2 / 4)
    assert destruction_rate(clean, adv, clean) == 1.0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((torch.tensor([True, True]), torch.tensor([True, True]), torch.tensor([True, False])), ValueError),
        ((torch.tensor([False]), torch.tensor([False]), torch.tensor([True])), ValueError),  # 0 / 0
        ((torch.tensor([True, False]), torch.tensor([False]), torch.tensor([True])), ValueError),  # shapes
        ((torch.tensor([1, 0]), torch.tensor([0, 0]), torch.tensor([1, 1])), TypeError),  # not boolean
        (([True], [False], [True]), TypeError),
    ],
)
def test_destruction_rate_bad_inputs(args, error):
    with pytest.raises(error):
        destruction_rate(*args)


X = torch.rand(2, 1, 8, 8)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: accuracy(brightness_model, X, torch.tensor([0, 1, 1])), ValueError),
        (lambda: accuracy(brightness_model, X, torch.tensor([0.0, 1.0])), TypeError),
        (lambda: accuracy(brightness_model, X * 3, torch.tensor([0, 1])), ValueError),
        (lambda: predict(brightness_model, X[0]), ValueError),
        (lambda: predict(brightness_model, X, batch_size=0), ValueError),
        (lambda: predict("model", X), TypeError),
        (lambda: robust_accuracy(nn.Identity(), X, torch.tensor([0, 1]), "fgsm", eps=-1.0), ValueError),
        (lambda: psnr(X, X[:1]), ValueError),
        (lambda: psnr(X, X.numpy()), TypeError),
        (lambda: psnr(X, X, data_range=0), ValueError),
        (lambda: psnr(X[0], X[0]), ValueError),
        (lambda: psnr(X, X.masked_fill(X > 0.5, float("nan"))), ValueError),
        (lambda: psnr(X, X, reduction="sum"), ValueError),
        (lambda: ssim(X, X.long()), TypeError),
        (lambda: ssim(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)), ValueError),  # smaller than 7x7
    ],
)
def test_metrics_bad_inputs(call, error):
    with pytest.raises(error):
        call()


def test_budgeted_accuracy_counts_correct_or_far_images() -> None:
    from companion.metrics import budgeted_accuracy

    class Threshold(torch.nn.Module):  # class 1 iff the mean pixel exceeds 0.5
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([0.5 - m, m - 0.5], dim=1)

    x = torch.full((3, 1, 2, 2), 0.4)
    y = torch.zeros(3, dtype=torch.long)
    x_adv = x.clone()
    x_adv[0] += 0.2   # fooled, l2 = 0.4
    x_adv[1] += 0.5   # fooled, l2 = 1.0
    model = Threshold()
    assert budgeted_accuracy(model, x, x_adv, y, 0.5) == pytest.approx(2 / 3)   # image 1 is too far, image 2 correct
    assert budgeted_accuracy(model, x, x_adv, y, 1.0) == pytest.approx(1 / 3)
    assert budgeted_accuracy(model, x, x_adv, y, 0.3, norm="linf") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        budgeted_accuracy(model, x, x_adv[:2], y, 0.5)
    with pytest.raises(ValueError, match="unknown norm"):
        budgeted_accuracy(model, x, x_adv, y, 0.5, norm="l1")

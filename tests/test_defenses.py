"""companion.defenses: pixel deflection, R-CAM, wavelet denoising, ensembles, simple transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_wavelet

from companion.data import load_mnist, sample_images
from companion.attacks import bpda
from companion.defenses import (PixelDeflection, Preprocessed, class_activation_maps, deflect, gaussian_noise, haar_denoise,
                                majority_vote, median_filter, pixel_dropout, quantize, random_resize_pad,
                                robust_activation_map, tv_denoise, wavelet_denoise)
from companion.nets import CAMNet, ImageNetCAM, SmallCNN


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_mnist("test")[0][:40]


def test_deflect_moves_k_pixels_to_values_from_their_window(digits) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 16, 16)
    out = deflect(x, deflections=20, window=2, generator=g)
    changed = (out != x).any(1)  # (B, H, W)
    assert 0 < int(changed.sum(dim=(1, 2)).max()) <= 20
    for b, i, j in changed.nonzero().tolist():  # the new value exists in the original window
        window = x[b, :, max(i - 2, 0): i + 3, max(j - 2, 0): j + 3].reshape(2, -1)
        assert bool(((window - out[b, :, i, j, None]).abs().sum(0) < 1e-7).any())
    assert torch.equal(deflect(x, 0, 2), x)
    again = deflect(x, deflections=20, window=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_deflection_avoids_protected_pixels() -> None:
    x = torch.rand(2, 1, 10, 10)
    keep = torch.zeros(2, 10, 10)
    keep[:, :, :5] = 1.0  # left half fully protected
    out = deflect(x, 200, 3, keep_map=keep, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[..., :5], x[..., :5]) and not torch.equal(out[..., 5:], x[..., 5:])
    assert torch.equal(deflect(x, 50, 3, keep_map=torch.ones(2, 10, 10)), x)  # nothing may be deflected


@pytest.mark.parametrize(("kwargs", "error"), [
    (dict(deflections=-1, window=1), ValueError), (dict(deflections=5, window=0), ValueError),
    (dict(deflections=2.5, window=1), TypeError), (dict(deflections=5, window=1, keep_map=torch.ones(3, 3)), ValueError),
    (dict(deflections=5, window=1, keep_map=torch.full((1, 8, 8), 2.0)), ValueError)])
def test_deflect_rejects_bad_input(kwargs, error) -> None:
    with pytest.raises(error):
        deflect(torch.rand(1, 1, 8, 8), **kwargs)
    with pytest.raises(ValueError):
        deflect(torch.rand(1, 1, 8, 8) * 3, 5, 1)


def test_throughput_of_deflection(digits) -> None:
    import time

    x = digits.repeat(25, 1, 1, 1)  # 1,000 images
    start = time.perf_counter()
    deflect(x, 100, 10)
    assert 1000 / (time.perf_counter() - start) >= 1000  # the target: >= 1,000 images/s


@pytest.mark.parametrize(("method", "sk_method"), [("bayes", "BayesShrink"), ("visu", "VisuShrink")])
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_wavelet_denoise_matches_scikit_image(digits, method, sk_method, mode) -> None:
    ours = wavelet_denoise(digits[:10].double(), 0.06, method=method, mode=mode).numpy()
    for img, mine in zip(digits[:10].double().numpy(), ours):
        ref = denoise_wavelet(img[0], sigma=0.06, wavelet="db1", mode=mode, method=sk_method, rescale_sigma=True)
        np.testing.assert_allclose(mine[0], np.clip(ref, 0, 1), atol=1e-10)


def test_wavelet_denoise_colour_per_channel_and_ycbcr() -> None:
    img = sample_images(("astronaut",))["astronaut"][:, :128, :128].double()
    ours = wavelet_denoise(img[None], 0.1, ycbcr=False)[0].numpy()
    ref = denoise_wavelet(img.permute(1, 2, 0).numpy(), sigma=0.1, wavelet="db1", method="BayesShrink", mode="soft",
                          channel_axis=-1, convert2ycbcr=False, rescale_sigma=True)
    np.testing.assert_allclose(ours, np.clip(ref, 0, 1).transpose(2, 0, 1), atol=1e-10)
    noisy = (img + 0.05 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0), dtype=img.dtype)).clamp(0, 1)
    denoised = wavelet_denoise(noisy[None], 0.05)[0]
    assert float((denoised - img).pow(2).mean()) < float((noisy - img).pow(2).mean())


def test_wavelet_denoise_rejects_bad_options(digits) -> None:
    for kwargs in (dict(method="sure"), dict(mode="garrote"), dict(wavelet="nope")):
        with pytest.raises(ValueError, match="unknown"):
            wavelet_denoise(digits[:2], 0.04, **kwargs)
    with pytest.raises(ValueError):
        wavelet_denoise(digits[:2], -0.1)


def test_robust_activation_map_is_normalised_and_top1_cam_matches_definition(digits) -> None:
    torch.manual_seed(0)
    model = CAMNet().eval()
    m = robust_activation_map(model, digits[:4], top_k=3)
    assert m.shape == (4, 28, 28) and float(m.min()) >= 0 and torch.allclose(m.flatten(1).amax(1), torch.ones(4))
    cls = torch.zeros(4, 1, dtype=torch.long)
    cam = class_activation_maps(model, digits[:4], cls)
    with torch.no_grad():
        fmap = model.feature_maps(digits[:4])
    assert torch.allclose(cam[:, 0], (model.head.weight[0].view(1, -1, 1, 1) * fmap).sum(1), atol=1e-5)
    # GAP head: averaging the CAM over space gives the logit minus the bias
    with torch.no_grad():
        logits = model(digits[:4])
    assert torch.allclose(cam[:, 0].mean((1, 2)), logits[:, 0] - model.head.bias[0], atol=1e-4)
    with pytest.raises(TypeError, match="global-average-pooling"):
        robust_activation_map(SmallCNN(), digits[:2])
    with pytest.raises(ValueError, match="top_k"):
        robust_activation_map(model, digits[:2], top_k=11)


def test_pixel_deflection_defense_and_ensemble(digits) -> None:
    model = CAMNet().eval()
    defense = PixelDeflection(model, deflections=10, window=1, sigma=0.08, top_k=3)
    out = defense(digits[:8], generator=torch.Generator().manual_seed(0))
    assert out.shape == digits[:8].shape and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match="use_map"):
        PixelDeflection(None)
    with pytest.raises(ValueError):
        PixelDeflection(model, sigma=0.0)
    votes = majority_vote(model, defense, digits[:8], runs=3)
    assert votes.shape == (8,) and votes.dtype == torch.long
    # with an identity transform the vote is the plain prediction
    assert torch.equal(majority_vote(model, lambda x: x, digits[:8], runs=2), model(digits[:8]).argmax(1))


def test_simple_transforms() -> None:
    x = torch.rand(2, 1, 5, 5)
    q = quantize(x, levels=2)
    assert set(q.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(quantize(torch.tensor([[[[0.2, 0.4, 0.9]]]]), levels=3), torch.tensor([[[[0.0, 0.5, 1.0]]]]))
    n = gaussian_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert n.shape == x.shape and float(n.min()) >= 0 and float(n.max()) <= 1 and not torch.equal(n, x)
    with pytest.raises(ValueError):
        quantize(x, levels=1)
    with pytest.raises(TypeError):
        Preprocessed("not callable", SmallCNN())


def test_pixel_dropout_zeroes_a_fresh_random_fraction_of_pixels() -> None:
    x = torch.rand(4, 3, 32, 32) * 0.9 + 0.05    # no pixel is 0 before the dropout
    out = pixel_dropout(x, 0.5, generator=torch.Generator().manual_seed(0))
    dropped = out == 0
    assert torch.equal(dropped.all(1), dropped.any(1))            # all channels of a pixel together
    assert abs(float(dropped[:, 0].float().mean()) - 0.5) < 0.03  # 4,096 pixels: 3 standard errors < 0.03
    assert torch.equal(out[~dropped], x[~dropped])                 # the kept pixels are unchanged
    again = pixel_dropout(x, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and not torch.equal(out, pixel_dropout(x, 0.5))
    assert torch.equal(pixel_dropout(x, 0.0), x)
    with pytest.raises(ValueError, match="rate"):
        pixel_dropout(x, 1.0)


def test_imagenet_wrapper_shapes_offline() -> None:
    model = ImageNetCAM("resnet18", pretrained=False).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 1000) and model.feature_maps(x).shape == (2, 512, 2, 2)
    assert robust_activation_map(model, x, top_k=5).shape == (2, 64, 64)
    with pytest.raises(ValueError, match="unknown arch"):
        ImageNetCAM("vgg19", pretrained=False)


# --------------------------------------------------------------------------- Table 4.6 baselines, differentiable denoiser
def _median_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Median over the ``size × size`` window scipy uses (offsets -size//2 .. (size-1)//2), borders mirrored
    as numpy's 'symmetric' pad (= scipy's 'reflect'), upper middle value for an even window."""
    from numpy.lib.stride_tricks import sliding_window_view

    before, after = size // 2, (size - 1) // 2
    padded = np.pad(img, ((before, after), (before, after)), mode="symmetric")
    windows = np.sort(sliding_window_view(padded, (size, size)).reshape(*img.shape, -1), axis=-1)
    return windows[..., size * size // 2]


@pytest.mark.parametrize("size", [2, 3])
def test_median_filter_matches_a_sliding_window_median(digits, size) -> None:
    x = (digits[:4] + 0.2 * torch.rand(digits[:4].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = median_filter(x, size)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(4):
        assert np.allclose(out[i, 0].numpy(), _median_reference(x[i, 0].numpy(), size))
    impulse = torch.zeros(1, 1, 7, 7)
    impulse[0, 0, 3, 3] = 1.0
    assert float(median_filter(impulse, size).abs().max()) == 0.0   # an isolated impulse disappears
    with pytest.raises(ValueError):
        median_filter(x, 0)


def test_tv_denoise_matches_scikit_image_and_smooths(digits) -> None:
    from skimage.restoration import denoise_tv_chambolle

    gen = torch.Generator().manual_seed(1)
    clean = digits[:6]
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    out = tv_denoise(noisy, weight=0.1)
    ref = np.clip(denoise_tv_chambolle(noisy[2, 0].double().numpy(), weight=0.1), 0, 1)
    assert np.allclose(out[2, 0].double().numpy(), ref, atol=1e-6)

    def tv(z: torch.Tensor) -> float:
        return float(z.diff(dim=-1).abs().sum() + z.diff(dim=-2).abs().sum())

    assert tv(out) < 0.5 * tv(noisy) and tv(tv_denoise(noisy, weight=0.3)) < tv(out)
    assert float((out - clean).pow(2).mean()) < float((noisy - clean).pow(2).mean())
    rgb = torch.rand(2, 3, 16, 16, generator=gen)
    assert tv_denoise(rgb).shape == rgb.shape
    with pytest.raises(ValueError):
        tv_denoise(noisy, weight=0.0)


def test_random_resize_pad_places_a_resized_copy_at_random(digits) -> None:
    ones = torch.ones(64, 1, 28, 28)
    out = random_resize_pad(ones, 32, generator=torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 32, 32)
    sides, corners = set(), set()
    for img in out[:, 0]:
        rows, cols = img.nonzero(as_tuple=True)
        side = int(rows.max() - rows.min() + 1)
        assert side == int(cols.max() - cols.min() + 1) and 28 <= side <= 31
        assert float(img.sum()) == side * side          # a full square of ones, zeros around it
        sides.add(side)
        corners.add((int(rows.min()), int(cols.min())))
    assert len(sides) > 1 and len(corners) > 1
    again = random_resize_pad(ones, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    y = random_resize_pad(digits[:5], 30, mode="bilinear", generator=torch.Generator().manual_seed(2))
    assert y.shape == (5, 1, 30, 30) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y.sum(dim=(1, 2, 3)), digits[:5].sum(dim=(1, 2, 3)), rtol=0.3)
    with pytest.raises(ValueError):
        random_resize_pad(digits[:2], 28)
    with pytest.raises(ValueError):
        random_resize_pad(torch.rand(1, 1, 28, 20), 32)


@pytest.mark.parametrize("sigma", [0.04, 0.08, 0.12])
def test_haar_denoise_matches_wavelet_denoise(digits, sigma) -> None:
    noisy = (digits[:8] + 0.1 * torch.randn(digits[:8].shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert torch.allclose(haar_denoise(noisy, sigma), wavelet_denoise(noisy, sigma), atol=1e-5)
    assert torch.allclose(haar_denoise(noisy.double(), sigma, levels=2),
                          wavelet_denoise(noisy.double(), sigma, levels=2), atol=1e-12)
    photo = sample_images(("chelsea",))["chelsea"][None][:, :, :64, :64].double()
    assert torch.allclose(haar_denoise(photo, sigma), wavelet_denoise(photo, sigma), atol=1e-12)


def test_haar_denoise_is_differentiable_and_serves_bpda(digits) -> None:
    x = digits[:4].clone().requires_grad_(True)
    haar_denoise(x, 0.08).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    defense = PixelDeflection(use_map=False, deflections=5, window=1, sigma=0.08)
    g_id, g_haar = [], []
    for approx, store in ((None, g_id), (lambda z: haar_denoise(z, 0.08), g_haar)):
        z = digits[:4].clone().requires_grad_(True)
        torch.manual_seed(0)
        out = bpda(defense, approx)(z)
        out.pow(2).sum().backward()
        store.append((out.detach(), z.grad))
    assert torch.allclose(g_id[0][0], g_haar[0][0], atol=1e-6)   # same forward pass
    assert not torch.allclose(g_id[0][1], g_haar[0][1])          # a different backward pass
    with pytest.raises(ValueError):
        haar_denoise(torch.rand(1, 1, 27, 27))

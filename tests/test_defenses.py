"""companion.defenses: pixel deflection, R-CAM, wavelet denoising, ensembles, simple transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_wavelet

from companion.data import load_mnist, sample_images
from companion.defenses import (PixelDeflection, Preprocessed, class_activation_maps, deflect, gaussian_noise, majority_vote,
                                pixel_dropout, quantize, robust_activation_map, wavelet_denoise)
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

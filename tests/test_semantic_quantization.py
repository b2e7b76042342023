"""Semantic quantization: the Augmented MS-ROI map, the JPEG transforms, the RMSE budget and the map statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion.compression import SceneNet, decode, encode, quality_ladder, roi_map
from companion.defenses import Preprocessed
from companion.defenses.semantic_quantization import (SemanticQuantization, aug_roi_map, jpeg, map_correlation,
                                                      mass_ratio, random_block_map, rescale_to_rmse)


@pytest.fixture(scope="module")
def net() -> SceneNet:
    torch.manual_seed(0)
    return SceneNet(11).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 1, 32, 32, generator=g)


def test_aug_map_without_jitter_is_the_plain_map(net, images):
    plain = roi_map(net, images)
    aug = aug_roi_map(net, images, draws=1, input_noise=0.0, feature_noise=0.0, shift=0, generator=0)
    torch.testing.assert_close(aug, plain)


def test_aug_map_range_shape_and_reproducibility(net, images):
    a = aug_roi_map(net, images, draws=4, generator=3)
    assert a.shape == (3, 32, 32) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, aug_roi_map(net, images, draws=4, generator=3))
    assert not torch.equal(a, aug_roi_map(net, images, draws=4, generator=4))


def test_aug_map_removes_its_hooks_and_leaves_the_global_rng(net, images):
    state = torch.random.get_rng_state()
    aug_roi_map(net, images, draws=2, generator=0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="top"):
        aug_roi_map(net, images, draws=2, top=12, generator=0)
    assert all(not m._forward_hooks for m in net.modules())


def test_aug_map_undoes_its_shift(net):
    """A shifted draw is shifted back: with no noise, every draw of an image whose map is shift-equivariant
    agrees with the plain map away from the borders (the network's padding breaks equivariance there)."""
    torch.manual_seed(1)
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 24:40, 24:40] = 1.0
    plain = roi_map(net, x)
    shifted = aug_roi_map(net, x, draws=6, input_noise=0.0, feature_noise=0.0, shift=8, generator=0)
    inner = (slice(None), slice(16, 48), slice(16, 48))
    assert map_correlation(shifted[inner], plain[inner]).item() > 0.9


def test_jpeg_matches_the_encoder(images):
    out = jpeg(images, 30)
    img = (images[1, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal((out[1, 0] * 255).round().to(torch.uint8).numpy(), decode(encode(img, 30)))
    assert out.shape == images.shape and out.dtype == images.dtype


def test_semantic_quantization_uses_the_map():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g)
    left = torch.zeros(2, 32, 32)
    left[:, :, :16] = 1.0
    T = SemanticQuantization(lambda v: left, quality_ladder(5, 5, 95))
    lv = T.levels(x)
    assert lv.shape == (2, 4, 4) and (lv[:, :, :2] == 4).all() and (lv[:, :, 2:] == 0).all()
    out = T(x)
    err = (out - x).abs()
    assert err[..., :16].mean() < 0.5 * err[..., 16:].mean()   # the kept half is closer to the input
    flat = SemanticQuantization(lambda v: torch.ones(2, 32, 32), quality_ladder(5, 5, 95))(x)
    torch.testing.assert_close(flat, jpeg(jpeg(x, 95), 95))   # every block at the top level, then the final pass
    assert Preprocessed(T, torch.nn.Flatten())(x).shape == (2, 32 * 32)


def test_semantic_quantization_bad_input(images):
    with pytest.raises(TypeError, match="callable"):
        SemanticQuantization("map", (10, 90))
    with pytest.raises(ValueError, match="ascending"):
        SemanticQuantization(lambda v: v[:, 0], (90, 10))
    with pytest.raises(ValueError, match="shape"):
        SemanticQuantization(lambda v: v[:, 0, :8], (10, 90))(images)
    with pytest.raises(ValueError, match="greyscale"):
        jpeg(torch.rand(1, 3, 16, 16), 50)


def test_random_block_map_is_blockwise():
    m = random_block_map(torch.zeros(2, 1, 20, 20), generator=0)
    assert m.shape == (2, 20, 20)
    assert (m[:, :8, :8] == m[:, :1, :1]).all() and (m[:, 16:, 16:] == m[:, 16:17, 16:17]).all()
    torch.testing.assert_close(m, random_block_map(torch.zeros(2, 1, 20, 20), generator=0))


def test_rescale_to_rmse():
    g = torch.Generator().manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(4, 1, 16, 16, generator=g)
    d = torch.randn(4, 1, 16, 16, generator=g)
    out = rescale_to_rmse(x, x + 0.01 * d, 0.05)
    rmse = (out - x).flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(rmse, torch.full((4,), 0.05), atol=2e-3, rtol=0)   # little clipping at 0.25..0.75
    cos = torch.nn.functional.cosine_similarity((out - x).flatten(1), d.flatten(1))
    assert (cos > 0.98).all()
    torch.testing.assert_close(rescale_to_rmse(x, x, 0.05), x)
    with pytest.raises(ValueError, match="shape"):
        rescale_to_rmse(x, x[:2], 0.05)


def test_mass_ratio_and_correlation():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2] = True                                   # half of the area
    w = torch.stack([torch.ones(4, 4), masks[0].float(), torch.zeros(4, 4)])
    r = mass_ratio(w, masks)
    assert r[0].item() == pytest.approx(1.0) and r[1].item() == pytest.approx(2.0) and math.isnan(r[2].item())
    with pytest.raises(ValueError, match="non-negative"):
        mass_ratio(-w, masks)
    a = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(0))
    c = map_correlation(a, 3 * a + 1)
    torch.testing.assert_close(c, torch.ones(2, dtype=torch.float64))
    assert math.isnan(map_correlation(a, torch.ones(2, 5, 5))[0].item())

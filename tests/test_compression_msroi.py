"""The scene generator, the MS-ROI/CAM network and its maps (companion.data.cluttered_scenes, companion.compression.msroi)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from companion.compression.msroi import SceneNet, object_recall, pixel_auc, roi_map
from companion.data import SCENE_CLASSES, cluttered_scenes, photo_region


@pytest.fixture(scope="module")
def scenes():
    return cluttered_scenes(24, "test", seed=3)


def test_scenes_shapes_labels_and_masks(scenes):
    n, k = len(scenes), scenes.masks.shape[1]
    assert scenes.images.shape == (n, 1, 64, 64) and scenes.images.min() >= 0 and scenes.images.max() <= 1
    assert scenes.labels.shape == (n, len(SCENE_CLASSES)) and scenes.masks.shape == (n, k, 64, 64)
    assert ((scenes.n_objects >= 1) & (scenes.n_objects <= 4)).all()
    for i in range(n):
        present = {int(c) for c in scenes.classes[i] if c >= 0}
        assert present == set(torch.nonzero(scenes.labels[i]).flatten().tolist())
        for j in range(k):   # a used slot has a mask, an unused one none
            assert bool(scenes.masks[i, j].any()) == bool(scenes.classes[i, j] >= 0)
    assert torch.equal(scenes.region(), scenes.masks.any(1))


def test_scenes_are_reproducible_and_seeded(scenes):
    again = cluttered_scenes(24, "test", seed=3)
    assert torch.equal(again.images, scenes.images) and torch.equal(again.masks, scenes.masks)
    assert not torch.equal(cluttered_scenes(24, "test", seed=4).images, scenes.images)


def test_object_free_textures_and_bad_arguments():
    empty = cluttered_scenes(5, "train", objects=(0, 0), seed=0)
    assert empty.labels.sum() == 0 and not empty.region().any() and (empty.n_objects == 0).all()
    with pytest.raises(ValueError, match="objects"):
        cluttered_scenes(5, objects=(3, 1))
    with pytest.raises(ValueError, match="split"):
        cluttered_scenes(5, "val")
    with pytest.raises(ValueError, match="texture"):
        cluttered_scenes(5, textures=("marble",))


def test_photo_region_covers_its_rectangles():
    mask = photo_region("chelsea")
    assert mask.shape == (300, 451) and mask[40:300, 120:370].all() and mask.sum() == 260 * 250
    with pytest.raises(ValueError):
        photo_region("lena")


def test_cam_head_is_the_class_activation_map_identity(scenes):
    torch.manual_seed(0)
    net = SceneNet(head="cam").eval()
    x = scenes.images[:4]
    f = net.feature_maps(x)
    # logits = w · GAP(f) + b, and the class maps are Σ_d w_d^c f_d: their spatial mean plus b is the logit
    torch.testing.assert_close(net(x), net.head(f.mean((2, 3))))
    torch.testing.assert_close(net.class_maps(x).mean((2, 3)) + net.head.bias, net(x))
    assert net.class_maps(x).shape == (4, len(SCENE_CLASSES), 8, 8)


def test_msroi_head_evidence_is_the_mean_of_its_class_maps(scenes):
    torch.manual_seed(0)
    net = SceneNet(head="msroi", maps_per_class=3).eval()
    x = scenes.images[:4]
    maps = net.class_maps(x)
    per_class = F.leaky_relu(net.class_layer(net.feature_maps(x)), 0.1).unflatten(1, (len(SCENE_CLASSES), 3))
    torch.testing.assert_close(maps, per_class.sum(2))
    torch.testing.assert_close(net(x), net.scale * maps.mean((2, 3)) + net.bias)
    with pytest.raises(ValueError, match="shape"):
        net(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="head"):
        SceneNet(head="gap")


def test_roi_map_fuses_the_ranked_class_maps(scenes):
    torch.manual_seed(1)
    net = SceneNet(head="cam").eval()
    x = scenes.images[:6]
    m = roi_map(net, x, top=3)
    assert m.shape == (6, 64, 64) and m.min() >= 0 and m.max() <= 1
    assert torch.allclose(m.flatten(1).amax(1), torch.ones(6))
    with torch.no_grad():   # top=1: the upsampled, clipped, rescaled CAM of the top class
        logits, maps = net(x), net.class_maps(x)
        top = maps[torch.arange(6), logits.argmax(1)].clamp_min(0)[:, None]
        up = F.interpolate(top, size=(64, 64), mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
        low, high = up.flatten(1).amin(1).view(-1, 1, 1), up.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(roi_map(net, x, top=1), (up - low) / (high - low))
    # a threshold that no class reaches leaves nothing: the map is zero
    assert roi_map(net, x, top=3, threshold=0.999999).abs().max() == 0
    with pytest.raises(ValueError):
        roi_map(net, x, top=12)
    with pytest.raises(ValueError):
        roi_map(net, x, threshold=1.5)


def test_object_recall_and_pixel_auc_on_hand_made_maps():
    masks = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    masks[0, 0, :2, :2] = True
    masks[0, 1, 5:, 5:] = True
    classes = torch.tensor([[4, 7, -1]])
    m = torch.zeros(1, 8, 8)
    m[0, 0, 0] = 0.9            # on the first object only
    assert object_recall(m, masks, classes).tolist() == [[True, False, False]]
    region = masks.any(1)
    assert pixel_auc(region.float(), region)[0] == 1.0          # a perfect map
    assert pixel_auc(1 - region.float(), region)[0] == 0.0      # an inverted one
    assert np.isnan(pixel_auc(m, torch.zeros(1, 8, 8, dtype=torch.bool))[0])   # no object: undefined
    with pytest.raises(ValueError):
        object_recall(m[0], masks, classes)

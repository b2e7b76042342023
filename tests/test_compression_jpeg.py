"""Variable-quality JPEG and its quality metrics (companion.compression.jpeg and .quality, the Gaussian/masked
options of companion.metrics.ssim): Pillow-identical tables, valid files, one-sided size matching, the released
encoder's median mosaic, the ROI gain on a photo, masked metrics against brute force, and clear errors."""
from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from skimage import data
from skimage.metrics import structural_similarity

import companion
from companion.compression import jpeg as J
from companion.compression import quality as Q
from companion.metrics import ssim

ASTRONAUT = data.astronaut()[100:228, 180:308]          # 128x128 RGB face crop
CAMERA = data.camera()[100:228, 200:328]                 # 128x128 grayscale
TEXTURE = np.random.default_rng(0).integers(0, 256, (72, 88, 3), dtype=np.uint8)
ODD_RGB = data.astronaut()[:37, 5:50]                    # not multiples of 8
ODD_GRAY = data.camera()[60:81, 90:133]


def pillow_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    options = {"subsampling": 0} if image.ndim == 3 else {}
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True, **options)
    return buffer.getvalue()


def central_square(shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    mask = np.zeros((h, w), bool)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    return mask


# --------------------------------------------------------------------------- tables and one JPEG
@pytest.mark.parametrize("image", [ODD_RGB, ODD_GRAY], ids=["rgb", "gray"])
def test_tables_give_pillow_quality_byte_for_byte(image: np.ndarray) -> None:
    channels = 1 if image.ndim == 2 else 3
    for q in range(1, 101):
        ours = J.encode(image, q)
        assert ours == pillow_jpeg(image, q), q
        with Image.open(io.BytesIO(ours)) as im:
            read = [list(im.quantization[i]) for i in sorted(im.quantization)]
        assert read == J.ijg_tables(q, channels), q


def test_scale_is_continuous_and_decreasing() -> None:
    assert J.ijg_scale(30) == 166 and J.ijg_scale(50) == 100 and J.ijg_scale(75) == 50 and J.ijg_scale(100) == 0
    qs = np.linspace(1.0, 100.0, 9901)
    scales = np.array([J.ijg_scale(q) for q in qs])
    assert (np.diff(scales) < 0).all()
    assert np.abs(np.diff(scales)).max() <= 2500 * 0.01 + 1e-6   # no jump: steepest, 2500 per unit, below 2
    assert J.ijg_scale(30.5) == pytest.approx((166 + 161) / 2)
    tables = np.array([J.ijg_tables(q, 3) for q in qs[::10]])
    assert (np.diff(tables, axis=0) <= 0).all() and tables.min() >= 1 and tables.max() <= 255


@pytest.mark.parametrize("image", [ODD_RGB, ODD_GRAY, TEXTURE[:1, :1], TEXTURE[:9, :3]])
def test_encode_decode_keep_shape_and_mode(image: np.ndarray) -> None:
    payload = J.encode(image, 47.3)
    with Image.open(io.BytesIO(payload)) as im:
        assert im.format == "JPEG" and im.mode == ("L" if image.ndim == 2 else "RGB")
        assert im.size == (image.shape[1], image.shape[0]) and "progressive" not in im.info
        if image.ndim == 3:
            assert JpegImagePlugin.get_sampling(im) == 0   # 4:4:4
    out = J.decode(payload)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_rd_curve_and_interpolation_at_equal_bytes() -> None:
    sizes, decoded = J.rd_curve(CAMERA, [30, 50, 70])
    assert sizes.dtype == np.int64 and (np.diff(sizes) > 0).all()
    assert [d.shape for d in decoded] == [CAMERA.shape] * 3
    # linear in log-bytes: halfway in log between 1000 and 4000 bytes is 2000 bytes
    assert J.at_equal_bytes(2000, [4000, 1000], [40.0, 30.0]) == pytest.approx(35.0)
    assert J.at_equal_bytes(1000, [1000, 4000], [30.0, 40.0]) == 30.0
    with pytest.raises(ValueError, match="outside"):
        J.at_equal_bytes(999, [1000, 4000], [30.0, 40.0])
    with pytest.raises(ValueError, match="distinct"):
        J.at_equal_bytes(1000, [1000, 1000, 4000], [30.0, 31.0, 40.0])


# --------------------------------------------------------------------------- levels and mosaics
def test_quality_ladder_values() -> None:
    assert J.quality_ladder() == (30, 40, 50, 60, 70)
    assert J.quality_ladder(divisor="k") == (30, 38, 46, 54, 62)
    assert J.quality_ladder(2, 20, 80) == (20, 80)


def test_block_levels_of_a_hand_made_map() -> None:
    s = np.zeros((20, 17))          # blocks: 3 x 3, the last row 4 px tall, the last column 1 px wide
    s[:8, :8] = 0.1                 # level 0
    s[:8, 8:16] = 0.5               # level 2
    s[:8, 16:] = 1.0                # top level, even at s = 1
    s[8:16, :8] = 0.39              # floor(1.95) = 1
    s[8:16, 8:16] = 0.0
    s[8:12, 8:10] = 1.0             # mean 8/64 -> 0, max 1 -> 4
    s[16:, :] = 0.9                 # partial row, level 4
    s[16:, :8] = 0.7                # level 3
    mean = J.block_levels(s, k=5)
    assert mean.tolist() == [[0, 2, 4], [1, 0, 0], [3, 4, 4]]
    assert J.block_levels(s, k=5, reduce="max")[1, 1] == 4
    assert J.block_levels(np.ones((9, 9)), k=3).tolist() == [[2, 2], [2, 2]]


def test_level_mosaic_copies_each_block_from_its_level() -> None:
    levels = np.indices(J._grid(ODD_RGB.shape)).sum(0) % 3
    qualities = (20, 45.5, 90)
    mosaic = J.level_mosaic(ODD_RGB, levels, qualities)
    decodes = [J.decode(J.encode(ODD_RGB, q)) for q in qualities]
    for (i, j), n in np.ndenumerate(levels):
        block = (slice(8 * i, 8 * i + 8), slice(8 * j, 8 * j + 8))
        assert np.array_equal(mosaic[block], decodes[n][block])


def test_control_maps() -> None:
    levels = J.block_levels(CAMERA / 255.0)
    uniform = J.uniform_levels(levels)
    assert uniform.shape == levels.shape and np.unique(uniform).tolist() == [math.floor(levels.mean() + 0.5)]
    assert (J.uniform_levels(levels, 4) == 4).all()
    shuffled = J.shuffled_levels(levels, np.random.default_rng(3))
    assert np.array_equal(np.bincount(shuffled.ravel()), np.bincount(levels.ravel()))
    assert not np.array_equal(shuffled, levels)
    assert np.array_equal(J.shuffled_levels(levels, 3), shuffled)    # a seed is a Generator made from it
    result = J.semantic_jpeg(CAMERA, None, len(J.encode(CAMERA, 50)), levels=shuffled)
    assert np.array_equal(result.levels, shuffled) and result.ratio <= 1


# --------------------------------------------------------------------------- the encoders
@pytest.mark.parametrize("image", [ASTRONAUT, CAMERA, TEXTURE], ids=["astronaut", "camera", "texture"])
@pytest.mark.parametrize("quality", [40, 50, 60])
def test_size_is_matched_from_below(image: np.ndarray, quality: int) -> None:
    target = len(J.encode(image, quality))
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    saliency = np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (2 * (h / 5) ** 2))
    for rule in J.RULES:
        result = J.semantic_jpeg(image, saliency, target, rule=rule)
        assert result.size <= target and result.ratio == result.size / target
        if rule == "shift":
            assert result.ratio >= 0.99, (rule, result.ratio)
            steps = np.diff(result.level_qualities)
            assert np.allclose(steps, 10) and result.final_quality == result.level_qualities[-1]
        else:
            assert result.level_qualities == (30, 40, 50, 60, 70)
        with Image.open(io.BytesIO(result.data)) as im:
            assert np.array_equal(np.array(im), result.decoded)
        assert result.decoded.shape == image.shape


def test_all_ones_and_all_zeros_maps() -> None:
    target = len(J.encode(ASTRONAUT, 50))
    ones = J.semantic_jpeg(ASTRONAUT, np.ones(ASTRONAUT.shape[:2]), target)
    zeros = J.semantic_jpeg(ASTRONAUT, np.zeros(ASTRONAUT.shape[:2]), target)
    assert (ones.levels == 4).all() and (zeros.levels == 0).all()
    # every block at the top level: standard JPEG decoded and re-encoded at one quality, close to the baseline's
    assert abs(ones.final_quality - 50) < 3 and ones.ratio >= 0.99
    # every block at the bottom level: the mosaic is 40 quality points below the final pass
    assert zeros.level_qualities[0] == pytest.approx(zeros.final_quality - 40) and zeros.size <= target


def test_roi_psnr_above_jpeg_at_equal_size_on_photos() -> None:
    for image in (ASTRONAUT, CAMERA):
        baseline = J.encode(image, 50)
        roi = central_square(image.shape)
        ours = J.semantic_jpeg(image, roi.astype(float), len(baseline))
        reference = J.decode(baseline)
        assert ours.size <= len(baseline)
        assert Q.masked_psnr(image, ours.decoded, roi) > Q.masked_psnr(image, reference, roi) + 0.5
        assert Q.masked_psnr(image, ours.decoded, ~roi) < Q.masked_psnr(image, reference, ~roi)


def test_unreachable_target_raises_and_too_large_target_reports_ratio() -> None:
    saliency = central_square(CAMERA.shape).astype(float)
    with pytest.raises(ValueError, match="below the smallest file"):
        J.semantic_jpeg(CAMERA, saliency, 200)
    with pytest.raises(ValueError, match="below the released encoder's smallest file"):
        J.released_encoder(CAMERA, saliency, 200)
    huge = J.semantic_jpeg(CAMERA, saliency, 10**7, rule="literal")
    assert huge.final_quality == 100 and huge.ratio < 0.01


def test_released_encoder_uses_the_median_and_the_highest_fitting_quality() -> None:
    h, w = ODD_RGB.shape[:2]
    saliency = np.tile(np.linspace(0, 1, w), (h, 1))
    mosaic, levels = J.median_mosaic(ODD_RGB, saliency)
    high = saliency >= np.median(saliency)
    assert 0.4 < high.mean() < 0.6 and np.array_equal(levels, high.astype(int))
    q80, q100 = J.decode(J.encode(ODD_RGB, 80)), J.decode(J.encode(ODD_RGB, 100))
    assert np.array_equal(mosaic[high], q100[high]) and np.array_equal(mosaic[~high], q80[~high])
    # a mask covering less than half of the image has median 0: every pixel comes from quality 100
    assert np.array_equal(J.median_mosaic(CAMERA, central_square(CAMERA.shape).astype(float))[0],
                          J.decode(J.encode(CAMERA, 100)))

    target = len(J.encode(ODD_RGB, 50))
    result = J.released_encoder(ODD_RGB, saliency, target)
    assert result.size <= target and result.rule == "released" and result.level_qualities == (80, 100)
    q = int(result.final_quality)
    assert q == result.final_quality and all(len(J.encode(mosaic, p)) > target for p in range(q + 1, 91))
    loose = J.released_encoder(ODD_RGB, saliency, target, tolerance=0.2)
    assert loose.final_quality >= q and loose.size <= 1.2 * target


# --------------------------------------------------------------------------- errors of the encoder
IMG = ODD_GRAY
MAP = np.full(IMG.shape, 0.5)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: J.encode(IMG.astype(np.float32), 50), TypeError, "uint8"),
        (lambda: J.encode(IMG.tolist(), 50), TypeError, "numpy array"),
        (lambda: J.encode(np.zeros((4, 4, 4), np.uint8), 50), ValueError, r"\(H, W, 3\)"),
        (lambda: J.encode(np.zeros((0, 4), np.uint8), 50), ValueError, "empty"),
        (lambda: J.encode(IMG, 0.5), ValueError, r"\[1, 100\]"),
        (lambda: J.encode(IMG, 101), ValueError, r"\[1, 100\]"),
        (lambda: J.encode(IMG, float("nan")), ValueError, "finite"),
        (lambda: J.encode(IMG, "50"), TypeError, "real number"),
        (lambda: J.ijg_tables(50, 2), ValueError, "channels"),
        (lambda: J.decode(b"not a jpeg"), ValueError, "readable JPEG"),
        (lambda: J.decode("x.jpg"), TypeError, "bytes"),
        (lambda: J.quality_ladder(1), ValueError, "k must be >= 2"),
        (lambda: J.quality_ladder(5, 70, 30), ValueError, "q_low must be below q_high"),
        (lambda: J.quality_ladder(5, 0, 30), ValueError, "q_low"),
        (lambda: J.quality_ladder(divisor="k+1"), ValueError, "unknown divisor"),
        (lambda: J.block_levels(MAP + 0.6), ValueError, r"\[0, 1\]"),
        (lambda: J.block_levels(MAP - 1), ValueError, r"\[0, 1\]"),
        (lambda: J.block_levels(np.where(MAP > 0, np.nan, 0)), ValueError, "NaN"),
        (lambda: J.block_levels(MAP, reduce="median"), ValueError, "unknown reduce"),
        (lambda: J.block_levels(MAP.astype(complex)), TypeError, "real numbers"),
        (lambda: J.semantic_jpeg(IMG, MAP[:-1], 1000), ValueError, "image's shape"),
        (lambda: J.semantic_jpeg(IMG, MAP, 1000, rule="nested"), ValueError, "unknown rule"),
        (lambda: J.semantic_jpeg(IMG, MAP, 1000, k=1), ValueError, "k must be >= 2"),
        (lambda: J.semantic_jpeg(IMG, MAP, 1000, q_range=(60, 40)), ValueError, "q_low must be below"),
        (lambda: J.semantic_jpeg(IMG, MAP, 1000, q_range=(30, 170)), ValueError, "q_high"),
        (lambda: J.semantic_jpeg(IMG, MAP, 0), ValueError, "target_bytes"),
        (lambda: J.semantic_jpeg(IMG, MAP, 1000.5), TypeError, "target_bytes"),
        (lambda: J.semantic_jpeg(IMG, None, 1000), ValueError, "exactly one"),
        (lambda: J.semantic_jpeg(IMG, MAP, 1000, levels=np.zeros((3, 6), int)), ValueError, "exactly one"),
        (lambda: J.semantic_jpeg(IMG, None, 1000, levels=np.zeros((3, 5), int)), ValueError, "one entry per"),
        (lambda: J.semantic_jpeg(IMG, None, 1000, levels=np.full((3, 6), 5)), ValueError, r"0\.\.4"),
        (lambda: J.semantic_jpeg(IMG, None, 1000, levels=np.zeros((3, 6))), TypeError, "integer"),
        (lambda: J.level_mosaic(IMG, np.zeros((3, 6), int), [50, 120]), ValueError, r"qualities\[1\]"),
        (lambda: J.released_encoder(IMG, MAP, 1000, tolerance=-0.1), ValueError, "tolerance"),
        (lambda: J.shuffled_levels(np.zeros((3, 6), int), np.random.RandomState(0)), TypeError, "Generator"),
        (lambda: J.uniform_levels(np.zeros((3, 6))), TypeError, "integer"),
        (lambda: J.rd_curve(IMG, []), ValueError, "empty"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- quality metrics
def test_luma_is_bt601() -> None:
    pixel = np.array([[[10, 200, 30]]], np.uint8)
    assert Q.luma(pixel)[0, 0] == pytest.approx(0.299 * 10 + 0.587 * 200 + 0.114 * 30)
    assert np.array_equal(Q.luma(ODD_GRAY), ODD_GRAY.astype(float))
    assert Q.luma(ODD_RGB).shape == ODD_RGB.shape[:2]


def test_masked_psnr_against_brute_force() -> None:
    decoded = J.decode(J.encode(ODD_RGB, 30))
    mask = np.zeros(ODD_RGB.shape[:2], bool)
    mask[3:20, 10:41] = True
    total, count = 0.0, 0
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            if mask[i, j]:
                r, g, b = (float(ODD_RGB[i, j, c]) - float(decoded[i, j, c]) for c in range(3))
                total += (0.299 * r + 0.587 * g + 0.114 * b) ** 2
                count += 1
    assert Q.masked_psnr(ODD_RGB, decoded, mask) == pytest.approx(10 * math.log10(255**2 / (total / count)), rel=1e-12)
    rgb_mse = ((ODD_RGB.astype(float) - decoded)[mask] ** 2).mean()
    assert Q.masked_psnr(ODD_RGB, decoded, mask, space="rgb") == pytest.approx(10 * math.log10(255**2 / rgb_mse))
    full = np.ones(mask.shape, bool)
    assert Q.masked_psnr(ODD_RGB, decoded, full) == Q.masked_psnr(ODD_RGB, decoded)
    assert Q.masked_psnr(ODD_RGB, ODD_RGB) == math.inf


def test_masked_ssim_against_scikit_image() -> None:
    decoded = J.decode(J.encode(CAMERA, 20))
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    whole, ssim_map = structural_similarity(CAMERA.astype(float), decoded.astype(float), full=True, **options)
    assert Q.masked_ssim(CAMERA, decoded) == pytest.approx(whole, rel=1e-12)
    assert Q.masked_ssim(CAMERA, decoded, np.ones(CAMERA.shape, bool)) == pytest.approx(whole, rel=1e-12)
    mask = np.zeros(CAMERA.shape, bool)
    mask[:40, 60:] = True                      # touches the border: the 5-pixel frame is left out
    inner = mask.copy()
    inner[:5], inner[-5:], inner[:, :5], inner[:, -5:] = False, False, False, False
    assert Q.masked_ssim(CAMERA, decoded, mask) == pytest.approx(ssim_map[inner].mean(), rel=1e-12)
    # RGB: the mean over the three channels' maps
    dec_rgb = J.decode(J.encode(ASTRONAUT, 20))
    per_channel = [structural_similarity(ASTRONAUT[..., c].astype(float), dec_rgb[..., c].astype(float), **options)
                   for c in range(3)]
    assert Q.masked_ssim(ASTRONAUT, dec_rgb, space="rgb") == pytest.approx(np.mean(per_channel), rel=1e-12)


def test_ssim_defaults_unchanged_and_new_options() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 24, 20, generator=g, dtype=torch.float64)
    x = (ref + 0.1 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    old = [structural_similarity(a.numpy(), b.numpy(), data_range=1.0, channel_axis=0) for a, b in zip(x, ref)]
    assert torch.equal(ssim(x, ref, reduction="none"), torch.tensor(old, dtype=torch.float64))   # bit for bit
    wang = [structural_similarity(a.numpy(), b.numpy(), data_range=1.0, channel_axis=0, gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False) for a, b in zip(x, ref)]
    assert torch.equal(ssim(x, ref, gaussian=True, reduction="none"), torch.tensor(wang, dtype=torch.float64))
    everywhere = torch.ones(2, 24, 20, dtype=torch.bool)
    assert torch.allclose(ssim(x, ref, mask=everywhere, reduction="none"), torch.tensor(old, dtype=torch.float64))
    with pytest.raises(TypeError, match="boolean"):
        ssim(x, ref, mask=everywhere.float())
    with pytest.raises(ValueError, match="shape"):
        ssim(x, ref, mask=everywhere[:1])
    border = torch.zeros_like(everywhere)
    border[:, :2] = True
    with pytest.raises(ValueError, match="border"):
        ssim(x, ref, mask=border)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x[..., :10], ref[..., :10], gaussian=True)


def test_packaged_metrics_are_finite_and_ordered() -> None:
    image = data.camera()[150:318, 150:318]                     # 168 px: enough for MS-SSIM's 5 scales
    worse, better = (J.decode(J.encode(image, q)) for q in (15, 60))
    low, high = Q.psnr_hvs(image, worse), Q.psnr_hvs(image, better)
    assert all(math.isfinite(v) for v in low + high) and high[0] > low[0] and high[1] > low[1]
    assert low[1] > low[0]                                      # masking only forgives error
    assert 0 < Q.vifp(image, worse) < Q.vifp(image, better) <= 1
    assert 0 < Q.ms_ssim(image, worse) < Q.ms_ssim(image, better) <= 1
    assert Q.psnr_hvs(image, image) == (math.inf, math.inf) and Q.vifp(image, image) == pytest.approx(1.0)
    # the same numbers as the package's own PSNR, whose tiles skip the partial blocks of a 8-odd image
    import contextlib
    with contextlib.redirect_stdout(io.StringIO()):
        from psnr_hvsm.numpy import psnr_hvs_hvsm
    odd = image[:165, :163]
    ours = Q.psnr_hvs(odd, worse[:165, :163])
    with np.errstate(divide="ignore", invalid="ignore"):
        theirs = psnr_hvs_hvsm(odd[:160, :160] / 255.0, worse[:160, :160] / 255.0)
    assert ours == pytest.approx((float(theirs[0]), float(theirs[1])), rel=1e-12)


def test_quality_row() -> None:
    image = data.astronaut()[:176, 100:276]
    decoded = J.decode(J.encode(image, 40))
    roi = central_square(image.shape)
    row = Q.quality_row(image, decoded, roi)
    assert tuple(row) == Q.QUALITY_KEYS and all(math.isfinite(v) for v in row.values())
    assert row["psnr_y"] == Q.masked_psnr(image, decoded) and row["psnr_y_roi"] == Q.masked_psnr(image, decoded, roi)
    inside, outside = row["psnr_y_roi"], row["psnr_y_background"]
    assert min(inside, outside) <= row["psnr_y"] <= max(inside, outside)
    small = Q.quality_row(ASTRONAUT, J.decode(J.encode(ASTRONAUT, 40)), np.ones(ASTRONAUT.shape[:2], bool))
    assert math.isnan(small["ms_ssim"]) and math.isnan(small["psnr_y_background"])
    assert math.isnan(small["ssim_y_background"])
    assert math.isfinite(small["vifp"]) and small["psnr_y_roi"] == small["psnr_y"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: Q.masked_psnr(ODD_RGB, ODD_RGB[:-1]), ValueError, "same shape"),
        (lambda: Q.masked_psnr(ODD_RGB, ODD_RGB, np.zeros(ODD_RGB.shape[:2], bool)), ValueError, "no pixel"),
        (lambda: Q.masked_psnr(ODD_RGB, ODD_RGB, np.ones(ODD_RGB.shape[:2])), TypeError, "boolean"),
        (lambda: Q.masked_psnr(ODD_RGB, ODD_RGB, np.ones((3, 3), bool)), ValueError, "image's shape"),
        (lambda: Q.masked_psnr(ODD_RGB, ODD_RGB, space="lab"), ValueError, "unknown space"),
        (lambda: Q.masked_ssim(ODD_RGB, ODD_RGB.astype(float)), TypeError, "uint8"),
        (lambda: Q.ms_ssim(ASTRONAUT, ASTRONAUT), ValueError, "161x161"),
        (lambda: Q.vifp(ODD_RGB, ODD_RGB), ValueError, "41x41"),
        (lambda: Q.psnr_hvs(ODD_RGB[:7], ODD_RGB[:7]), ValueError, "8x8"),
        (lambda: Q.quality_row(ODD_RGB, ODD_RGB, None), TypeError, "roi_mask"),
    ],
)
def test_bad_metric_arguments_raise_clear_errors(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_metrics_print_nothing() -> None:
    """psnr_hvsm prints a note about PyTorch when first imported; notebooks must stay clean."""
    code = ("import numpy as np; from companion.compression.quality import psnr_hvs; "
            "a = np.zeros((8, 8), np.uint8); psnr_hvs(a, a + 1)")
    root = str(Path(companion.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    assert out.stdout == ""

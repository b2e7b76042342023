"""Unit tests of companion.ct: projectors against scikit-image, adjointness, gradients, RIL, LI, NMAR, nets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion.ct import FanBeam, ParallelBeam, RadonInversionLayer, filter_sinogram, ramp_filter, uniform_angles
from companion.ct.dudonet import CONFIGS, MARNet, UNet, mar_loss, mar_outputs, train_mar
from companion.ct.evaluate import group_means, masked_psnr, masked_ssim
from companion.ct.mar import linear_interpolation, metal_trace, nmar, nmar_prior
from companion.ct.phantoms import implant_masks, phantom_images, random_body_phantoms, shepp_logan_body
from companion.ct.physics import mass_attenuation, polychromatic_line_integrals, spectrum, water_correction
from companion.ct.simulate import Scanner, simulate


def _phantom(n: int) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


def _disk(n: int) -> torch.Tensor:
    idx = torch.arange(n) - n // 2
    return (idx[:, None] ** 2 + idx[None, :] ** 2 <= (n // 2 - 1) ** 2)


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner(32, n_views=40)


pytestmark = pytest.mark.filterwarnings("ignore:Radon transform. image must be zero outside")


@pytest.mark.parametrize("n", [32, 33])
def test_parallel_radon_matches_skimage(n: int) -> None:
    from skimage.transform import radon

    img = _phantom(n)
    theta = np.arange(60) * 3.0
    ref = radon(img, theta, circle=True)
    ours = ParallelBeam(n, uniform_angles(60)).A(torch.tensor(img)).numpy()
    assert ours.shape == ref.shape
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.02


# Relative L2 error inside the field of view (float64), measured: ramp 4.7e-9, shepp-logan 5.3e-6,
# hann 9.5e-4; the bounds leave a factor ~10. Our ramp and Shepp-Logan frequency responses equal
# scikit-image's to 2e-16; its Hann window is NumPy's symmetric np.hanning(size) where ours is the
# periodic 0.5 (1 + cos 2 pi f), which differ by up to 4 % of the response (an O(1/size) difference).
@pytest.mark.parametrize("window,skname,tol", [("ramp", "ramp", 5e-8), ("shepp-logan", "shepp-logan", 5e-5),
                                               ("hann", "hann", 1e-2)])
def test_fbp_matches_iradon_inside_the_circle(window: str, skname: str, tol: float) -> None:
    from skimage.transform import iradon, radon

    n = 48
    theta = np.arange(90) * 2.0
    sino = radon(_phantom(n), theta, circle=True)
    ref = iradon(sino, theta, circle=True, filter_name=skname)
    ours = ParallelBeam(n, uniform_angles(90)).fbp(torch.tensor(sino), window).numpy()
    inside = _disk(n).numpy()
    assert np.linalg.norm((ours - ref)[inside]) / np.linalg.norm(ref[inside]) < tol


def test_adjointness_and_batching() -> None:
    op = ParallelBeam(24, uniform_angles(30), n_detectors=35, detector_spacing=0.8)
    assert op.adjointness_error() < 1e-5
    fan = FanBeam(24, n_views=30)
    assert fan.adjointness_error() < 1e-5
    x = torch.rand(2, 3, 24, 24)
    y = op.A(x)
    assert y.shape == (2, 3, 35, 30)
    assert torch.allclose(y[1, 2], op.A(x[1, 2]), atol=1e-5)
    assert op.A_adjoint(y).shape == x.shape


@pytest.mark.parametrize("geometry,kw", [
    (ParallelBeam, {"angles": uniform_angles(30), "n_detectors": 35, "detector_spacing": 0.8}),
    (FanBeam, {"n_views": 30}),
])
def test_adjointness_error_detects_a_wrong_back_projection(geometry, kw) -> None:
    """Two classic slips in a back-projector, each far above the exact adjoint's rounding error."""

    class SwappedAxes(geometry):                        # image rows and columns exchanged
        def A_adjoint(self, y):
            return super().A_adjoint(y).transpose(-1, -2)

    class ScaledBack(geometry):                         # a constant dropped, e.g. the detector spacing 0.8
        def A_adjoint(self, y):
            return 0.8 * super().A_adjoint(y)

    exact = geometry(24, **kw).adjointness_error()      # float64 inputs by default
    assert exact < 1e-12
    assert SwappedAxes(24, **kw).adjointness_error() > max(1e-3, 1e4 * exact)
    assert ScaledBack(24, **kw).adjointness_error() > 0.05


def test_projection_conserves_mass() -> None:
    op = ParallelBeam(32, uniform_angles(16), n_detectors=47)
    x = torch.rand(32, 32, dtype=torch.float64)
    sums = op.A(x).sum(0) * op.spacing
    assert torch.allclose(sums, x.sum().expand_as(sums), rtol=1e-6)


def test_gradcheck_float64_tiny_geometry() -> None:
    op = ParallelBeam(6, uniform_angles(5), n_detectors=7)
    x = torch.rand(2, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (x,))
    assert torch.autograd.gradcheck(op.A_adjoint, (y,))
    assert torch.autograd.gradcheck(op.fbp, (y,))
    fan = FanBeam(8, n_detectors=9, n_views=8)
    ril = RadonInversionLayer(fan).double()
    yf = torch.rand(1, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ril, (yf,))


def test_ril_gradient_is_its_adjoint() -> None:
    """∂⟨f_R(y), g⟩/∂y = f_Rᵀ g: the image-domain error is projected back onto the sinogram."""
    fan = FanBeam(16, n_views=20)
    ril = RadonInversionLayer(fan).double()
    y = torch.rand(1, *fan.out_shape, dtype=torch.float64, requires_grad=True)
    g = torch.rand(1, 16, 16, dtype=torch.float64)
    (ril(y) * g).sum().backward()
    y2 = torch.rand_like(y)
    lhs = float((ril(y2) * g).sum())
    rhs = float((y2 * y.grad).sum())
    assert abs(lhs - rhs) < 1e-8 * max(1.0, abs(lhs))


@pytest.mark.parametrize("n, n_t", [(48, None), (47, None), (48, 48), (48, 49)])
def test_rebinning_equals_direct_parallel_projection(n: int, n_t: int | None) -> None:
    """Odd and even detector counts: the rebinned grid must be centred like ParallelBeam's detector."""
    img = torch.tensor(_phantom(n), dtype=torch.float32)
    fan = FanBeam(n)
    ril = RadonInversionLayer(fan, n_t=n_t)
    rebinned = ril.rebin(fan.A(img))
    direct = ril.parallel.A(img)
    assert float((rebinned - direct).norm() / direct.norm()) < 0.05
    # [0, π) is enough: the [π, 2π) half of the parallel data is the same rays reversed
    assert ril.grid.shape[:2] == (n_t or fan.n_detectors, round(fan.n_views / 2))


def test_full_turn_rebinning_agrees_with_half_turn() -> None:
    """360° fan data hold every line twice: f_R over [0, 2π) (halved) ≈ f_R over [0, π)."""
    n = 48
    img = torch.tensor(_phantom(n), dtype=torch.float32)
    fan = FanBeam(n)
    y = fan.A(img)
    half, full = RadonInversionLayer(fan)(y), RadonInversionLayer(fan, span=2 * math.pi)(y)
    assert full.shape == half.shape
    assert float((full - half).norm() / half.norm()) < 0.05
    with pytest.raises(ValueError, match="span"):
        RadonInversionLayer(fan, span=1.0)


def test_ril_reconstructs_close_to_iradon() -> None:
    from skimage.transform import iradon, radon

    n = 64
    img = _phantom(n)
    fan = FanBeam(n)
    ril = RadonInversionLayer(fan)
    ours = ril(fan.A(torch.tensor(img, dtype=torch.float32))).numpy()
    theta = np.arange(ril.parallel.n_angles) * 180.0 / ril.parallel.n_angles
    ref = iradon(radon(img, theta, circle=True), theta, circle=True)
    inside = _disk(n).numpy()
    assert np.linalg.norm((ours - ref)[inside]) / np.linalg.norm(ref[inside]) < 0.15
    assert abs(ours[inside].mean() / img[inside].mean() - 1) < 0.04


def test_filters_validate_and_ramp_has_no_dc_bias() -> None:
    r = ramp_filter(32)
    assert abs(float(r[0])) < 0.01 * float(r.max())
    with pytest.raises(ValueError, match="window"):
        ramp_filter(32, window="cosine")
    with pytest.raises(ValueError):
        filter_sinogram(torch.zeros(5))


def test_operator_validation() -> None:
    op = ParallelBeam(16, uniform_angles(8))
    with pytest.raises(ValueError, match="end with shape"):
        op.A(torch.zeros(2, 15, 16))
    with pytest.raises(TypeError):
        op.A(torch.zeros(16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="angles"):
        ParallelBeam(16, [])
    with pytest.raises(ValueError, match="source_distance"):
        FanBeam(16, source_distance=4.0)
    with pytest.raises(TypeError):
        RadonInversionLayer(op)  # type: ignore[arg-type]


def test_linear_interpolation_fills_the_trace() -> None:
    y = torch.arange(10.0).view(10, 1).repeat(1, 3) ** 1.0
    mask = torch.zeros(10, 3, dtype=torch.bool)
    mask[3:6, 0] = True           # interior gap: a straight line from y[2] to y[6]
    mask[0:2, 1] = True           # gap at the edge: nearest known value
    mask[:, 2] = True             # whole view masked: zero
    out = linear_interpolation(y * 2 + 1, mask)
    assert torch.allclose(out[:, 0], (y * 2 + 1)[:, 0])
    assert torch.allclose(out[0:2, 1], torch.full((2,), 5.0))
    assert torch.all(out[:, 2] == 0)
    assert torch.equal(out[~mask], (y * 2 + 1)[~mask])
    with pytest.raises(ValueError, match="mask"):
        linear_interpolation(y, mask[:5])


def test_physics_tables_and_spectrum() -> None:
    e, w = spectrum()
    assert len(e) == 10 and abs(float(w.sum()) - 1) < 1e-12 and bool((w > 0).all())
    mu = mass_attenuation("titanium", e)
    assert bool((mu[1:] < mu[:-1]).all())                    # attenuation falls with energy
    assert float(mass_attenuation("water", 60.0)) == pytest.approx(0.206)
    with pytest.raises(ValueError, match="material"):
        mass_attenuation("gold", 60.0)
    with pytest.raises(ValueError, match="keV"):
        mass_attenuation("water", 10.0)
    coef = water_correction(e, w)
    assert np.polyval(coef, 0.0) == 0.0
    thick = torch.tensor([5.0, 20.0])                          # g/cm² of water: corrected to the 70 keV value
    corrected = np.polyval(coef, polychromatic_line_integrals({"water": thick}, e, w).numpy())
    assert np.allclose(corrected, (mass_attenuation("water", 70.0) * thick).numpy(), rtol=0.01)


def test_phantoms_and_implants() -> None:
    gen = torch.Generator().manual_seed(0)
    water, bone = random_body_phantoms(6, 32, gen)
    assert water.shape == bone.shape == (6, 32, 32)
    assert float(water.max()) < 1.2 and float(bone.max()) <= 1.92 + 1e-6
    assert not bool(((water > 0) & (bone > 0)).any())        # bone replaces tissue
    areas = [60.0, 20.0, 4.0]
    masks = implant_masks(areas, 32, gen)
    assert masks.shape == (3, 32, 32) and float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert torch.allclose(masks.sum((1, 2)), torch.tensor(areas), rtol=0.2)
    w, b = shepp_logan_body(32)
    assert w.shape == (1, 32, 32) and float(b.max()) > 1.5
    with pytest.raises(ValueError):
        implant_masks([], 32)


def test_phantom_images_are_the_averaged_down_total_density() -> None:
    x = phantom_images(5, 16, torch.Generator().manual_seed(3))
    assert x.shape == (5, 1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    water, bone = random_body_phantoms(5, 32, torch.Generator().manual_seed(3))
    by_hand = (water + bone).reshape(5, 16, 2, 16, 2).mean((2, 4)) / 2
    assert torch.allclose(x[:, 0], by_hand, atol=1e-6)
    assert torch.equal(x, phantom_images(5, 16, torch.Generator().manual_seed(3)))
    assert float(x[:, :, 0, 0].max()) == 0.0                   # air outside the body
    with pytest.raises(ValueError):
        phantom_images(5, 4)


def test_simulation_and_baselines(scanner: Scanner) -> None:
    gen = torch.Generator().manual_seed(0)
    water, bone = random_body_phantoms(8, 32, gen)
    metal = implant_masks([30.0] * 8, 32, gen)
    data = simulate(scanner, water, bone, metal, gen)
    assert data.y.shape == data.y_gt.shape == data.trace.shape == (8, 33, 40)
    assert bool(data.trace.any()) and torch.equal(data.trace, metal_trace(scanner.fan.A(metal)))
    off = ~data.trace
    assert float((data.y - data.y_gt)[off].abs().mean()) < 0.05 * float(data.y_gt.abs().mean())
    group = torch.zeros(8, dtype=torch.long)
    p_ma = masked_psnr(data.x_ma, data.x_gt, data.metal)
    p_li = masked_psnr(data.x_li, data.x_gt, data.metal)
    p_nmar = masked_psnr(scanner.reconstruct(nmar(scanner, data.y, data.trace, data.x_li)), data.x_gt, data.metal)
    assert float(p_li.mean()) > float(p_ma.mean()) + 3       # LI removes most of the streaks
    assert float(p_nmar.mean()) > float(p_ma.mean())
    assert group_means(p_li, group, 1)[0] == pytest.approx(float(p_li.mean()))
    s = masked_ssim(data.x_li, data.x_gt, data.metal)
    assert s.shape == (8,) and bool((s <= 1).all())
    assert float(nmar_prior(data.x_li).max()) > 1.3          # bone kept in the prior
    with pytest.raises(ValueError, match="target"):
        simulate(scanner, water, bone, metal, target="clean")
    with pytest.raises(ValueError, match="coverage"):
        simulate(scanner, water, bone, metal * 2)


def test_unet_mask_pyramid_and_marnet(scanner: Scanner) -> None:
    net = UNet(2, 4, mask_pyramid=True)
    x = torch.rand(2, 2, 33, 40)
    assert net(x, x[:, :1]).shape == (2, 1, 33, 40)
    with pytest.raises(ValueError, match="mask"):
        net(x)
    gen = torch.Generator().manual_seed(1)
    water, bone = random_body_phantoms(16, 32, gen)
    data = simulate(scanner, water, bone, implant_masks([20.0] * 16, 32, gen), gen)
    for name in CONFIGS:
        model = MARNet(name, scanner, 4)
        out = model(data[:2])
        terms = mar_loss(model, out, data[:2])
        assert ("L_RC" in terms) == CONFIGS[name]["rc"]
        assert MARNet.image(out).shape == (2, 32, 32)
        outside = ~data.trace[:2]
        if "y_out" in out:                                  # eq. 4.6: only the trace is replaced
            assert torch.equal(out["y_out"][outside], data.y_li[:2][outside])
    torch.manual_seed(0)
    model = MARNet("G", scanner, 4)
    hist = train_mar(model, data, 30, batch_size=8, lr=1e-3, progress=False)
    assert np.mean(hist.loss[-5:]) < np.mean(hist.loss[:5])
    assert set(hist.steps) == {"loss", "L_Gs", "L_RC", "L_Gi"}
    assert mar_outputs(model, data)["x_out"].shape == (16, 32, 32)
    with pytest.raises(ValueError, match="config"):
        MARNet("Z", scanner)


def test_shipped_dudonet_weights_load_and_match_the_code() -> None:
    from companion import pretrained
    from companion.ct.weights import DUDONET_SMALL

    meta = pretrained.metadata("dudonet_small")
    assert meta["config_hash"] == pretrained.config_hash(DUDONET_SMALL), "rebuild the weights with `make weights`"
    nets = pretrained.load("dudonet_small")
    assert set(nets) == set(DUDONET_SMALL["configs"])
    scanner = next(iter(nets.values())).scanner
    gen = torch.Generator().manual_seed(0)
    water, bone = random_body_phantoms(2, DUDONET_SMALL["n_pixels"], gen)
    data = simulate(scanner, water, bone, implant_masks([40.0, 10.0], DUDONET_SMALL["n_pixels"], gen), gen)
    for name, net in nets.items():
        image = MARNet.image(mar_outputs(net, data))
        assert image.shape == data.x_gt.shape and bool(torch.isfinite(image).all()), name

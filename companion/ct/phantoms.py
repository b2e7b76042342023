"""Procedural CT phantoms and metal implants (no patient data needed).

A phantom is a pair of *density maps* (g/cm³): water-equivalent soft tissue and cortical bone, the
material decomposition a polychromatic simulation needs. :func:`random_body_phantoms` draws bodies
made of ellipses (:func:`phantom_images` shows them as grey images, the second image domain of the
MimicGAN chapter); :func:`shepp_logan_body` turns scikit-image's Shepp–Logan phantom into the same
form. :func:`implant_masks` draws metal implants of prescribed areas (in pixels) as fractional
coverage maps (4× super-sampled, so edge pixels are partly metal: the partial-volume effect).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._validate import check_int, check_positive

BONE_DENSITY = 1.92


def _grid(n: int, supersample: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(u, v)`` in pixels (u right, v up), optionally super-sampled."""
    s = supersample
    idx = (torch.arange(n * s, dtype=torch.float32) + 0.5) / s - 0.5
    v, u = torch.meshgrid(n // 2 - idx, idx - n // 2, indexing="ij")
    return u, v


def _ellipses(u: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, cv: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
              tilt: torch.Tensor) -> torch.Tensor:
    """Indicator maps of ellipses with parameters shaped ``(B, K)`` -> ``(B, K, H, W)``."""
    du = u[None, None] - cu[..., None, None]
    dv = v[None, None] - cv[..., None, None]
    c, s = torch.cos(tilt)[..., None, None], torch.sin(tilt)[..., None, None]
    p, q = du * c + dv * s, -du * s + dv * c
    return ((p / a[..., None, None]) ** 2 + (q / b[..., None, None]) ** 2 <= 1).float()


def random_body_phantoms(n: int, size: int = 64, generator: torch.Generator | None = None,
                         chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random body phantoms of ``size × size`` pixels: ``(water, bone)`` density maps ``(n, size, size)``.

    A body ellipse (semi-axes 0.38–0.47 and 0.28–0.42 of the size, random tilt) of water density
    0.95–1.05 g/cm³; 4–8 soft-tissue ellipses inside it adding ±0.08 g/cm³; 2–5 bone ellipses that
    replace the tissue, cortical bone (1.92 g/cm³) times a fraction 0.3–1.0.
    """
    check_int(n, "n")
    check_int(size, "size", minimum=8)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    u, v = _grid(size)
    waters, bones = [], []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)

        def rnd(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=gen)

        a, b = rnd(m, 1, lo=0.38, hi=0.47) * size, rnd(m, 1, lo=0.28, hi=0.42) * size
        tilt = rnd(m, 1, hi=math.pi)
        body = _ellipses(u, v, torch.zeros(m, 1), torch.zeros(m, 1), a, b, tilt)[:, 0]
        water = body * rnd(m, 1, 1, lo=0.95, hi=1.05)

        def inside(k: int, lo: float, hi: float) -> tuple[torch.Tensor, ...]:
            r, ang = rnd(m, k).sqrt() * 0.65, rnd(m, k, hi=2 * math.pi)
            cu = r * torch.cos(ang) * a * torch.cos(tilt) - r * torch.sin(ang) * b * torch.sin(tilt)
            cv = r * torch.cos(ang) * a * torch.sin(tilt) + r * torch.sin(ang) * b * torch.cos(tilt)
            return cu, cv, rnd(m, k, lo=lo, hi=hi) * size, rnd(m, k, lo=lo, hi=hi) * size, rnd(m, k, hi=math.pi)

        k_tissue = torch.randint(4, 9, (m, 1), generator=gen)
        tissue = _ellipses(u, v, *inside(8, 0.03, 0.15)) * (torch.arange(8)[None] < k_tissue).float()[..., None, None]
        water = water + (tissue * rnd(m, 8, 1, 1, lo=-0.08, hi=0.08)).sum(1) * body
        k_bone = torch.randint(2, 6, (m, 1), generator=gen)
        bone_shapes = _ellipses(u, v, *inside(5, 0.02, 0.08)) * (torch.arange(5)[None] < k_bone).float()[..., None, None]
        bone_value = bone_shapes * rnd(m, 5, 1, 1, lo=0.3, hi=1.0) * BONE_DENSITY
        bone = bone_value.max(1).values * body
        water = water * (bone == 0)
        waters.append(water.clamp(min=0))
        bones.append(bone)
    return torch.cat(waters), torch.cat(bones)


def phantom_images(n: int, size: int = 28, generator: torch.Generator | None = None, *,
                   oversample: int = 2) -> torch.Tensor:
    """``n`` random body phantoms as grey images ``(n, 1, size, size)`` in [0, 1], for image priors.

    The grey level is the total density over 2 g/cm³ (soft tissue about 0.5, cortical bone up to 0.96,
    air 0). The bodies are drawn at ``oversample × size`` pixels by :func:`random_body_phantoms` and
    averaged down, so the small tissue and bone ellipses keep anti-aliased edges at small sizes.
    """
    check_int(size, "size", minimum=8)
    check_int(oversample, "oversample")
    water, bone = random_body_phantoms(n, size * oversample, generator)
    density = (water + bone)[:, None]
    return (F.avg_pool2d(density, oversample) / 2.0).clamp(0.0, 1.0)


def shepp_logan_body(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's Shepp–Logan phantom as ``(water, bone)`` density maps ``(1, size, size)``.

    The skull (intensity ≥ 0.9) becomes bone of density 1.92·intensity; the brain (0 < intensity < 0.9)
    water of density ``0.85 + intensity``, so its small contrasts survive.
    """
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    check_int(size, "size", minimum=8)
    img = torch.tensor(resize(shepp_logan_phantom(), (size, size), order=0, anti_aliasing=False), dtype=torch.float32)
    bone = torch.where(img >= 0.9, BONE_DENSITY * img, torch.zeros_like(img))
    water = torch.where((img > 0) & (img < 0.9), 0.85 + img, torch.zeros_like(img))
    return water[None], bone[None]


def implant_masks(areas: Sequence[float], size: int = 64, generator: torch.Generator | None = None,
                  supersample: int = 4) -> torch.Tensor:
    """Metal implants ``(len(areas), size, size)``: fractional coverage in [0, 1] of prescribed areas (pixels).

    Each implant is one ellipse, or two of equal area (probability 1/2, as in paired hip or dental
    implants), aspect ratio 1–3, placed near the centre; coverage is averaged over ``supersample²``
    sub-pixels. The total coverage ``mask.sum()`` is close to the requested area.
    """
    check_int(size, "size", minimum=8)
    check_int(supersample, "supersample")
    areas = [check_positive(a, "area") for a in areas]
    if not areas:
        raise ValueError("areas is empty: give at least one implant area in pixels")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    u, v = _grid(size, supersample)
    masks = []
    for area in areas:
        count = 1 + int(torch.rand(1, generator=gen) < 0.5)
        aspect = 1 + 2 * torch.rand(count, generator=gen)
        b = (area / count / (math.pi * aspect)).sqrt()
        a = aspect * b
        ang = torch.rand(1, generator=gen) * 2 * math.pi
        spread = 0.12 * size * (count - 1) + 0.06 * size * torch.rand(1, generator=gen)
        offs = torch.tensor([1.0, -1.0])[:count] * spread
        cu, cv = offs * torch.cos(ang), offs * torch.sin(ang)
        shape = _ellipses(u, v, cu[None], cv[None], a[None], b[None], torch.rand(1, count, generator=gen) * math.pi)
        fine = shape.amax(1)
        masks.append(F.avg_pool2d(fine[None], supersample)[0, 0])
    return torch.stack(masks)

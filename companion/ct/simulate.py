"""Simulation of metal-corrupted CT scans, step by step (the CNNMAR-style protocol of DuDoNet).

For each phantom (water and bone density maps) and metal implant (coverage map):

1. the metal replaces tissue: densities ``× (1 − m)``; projected densities (g/cm²) of water, bone and
   metal by the fan-beam projector (pixel size ``fov_cm / N``);
2. polychromatic intensities ``I = N0 Σ_k η_k exp(−Σ_m µ_m(E_k) p_m)`` (beam hardening, eq. 4.1);
3. Poisson noise ``I ← max(Poisson(I), 1)`` and ``Y = −log(I / N0)``;
4. water beam-hardening correction (a polynomial of degree 4), so that away from metal ``Y ≈ Y_gt``;
5. the metal trace ``M_t`` (projected metal > 10⁻³ pixel) and ``Y_LI`` (LI inside the trace);
6. ground truth at ``E0 = 70`` keV without metal: ``X_ph``, ``Y_gt = P X_ph`` (noise free) and, by
   default, the target ``X_gt = f_R(Y_gt)`` (band-limited to the scanner's grid).

Units: images in multiples of ``µ_water(E0)`` (water = 1); sinograms as line integrals of those
images with lengths in units of the image width (``P X / N``), so both domains are O(1).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .._validate import check_choice, check_int, check_positive
from .fan import FanBeam, RadonInversionLayer
from .mar import linear_interpolation, metal_trace
from .physics import DENSITY, mass_attenuation, polychromatic_line_integrals, spectrum, water_correction


class Scanner:
    """A fan-beam scanner of an ``N × N`` field of view with its reconstruction layer, in book units.

    ``project(x)``: images ``(..., N, N)`` (water units) -> sinograms ``(..., n_det, n_views)``;
    ``reconstruct(y)``: the Radon inversion layer ``f_R`` back to images. Defaults: ``n_det = N + 1``,
    ``n_views = 1.25 N``, ``D = 2.5 R``, field of view 32 cm, 120 kVp, titanium, ``N0 = 2·10⁷``.
    """

    def __init__(self, n_pixels: int = 64, n_views: int | None = None, fov_cm: float = 32.0, photons: float = 2e7,
                 metal: str = "titanium", e0: float = 70.0, kvp: float = 120.0) -> None:
        check_int(n_pixels, "n_pixels", minimum=8)
        self.fan = FanBeam(n_pixels, n_views=n_views)
        self.ril = RadonInversionLayer(self.fan, scale=float(n_pixels))
        self.n_pixels = n_pixels
        self.pixel_cm = check_positive(fov_cm, "fov_cm") / n_pixels
        self.photons = check_positive(photons, "photons")
        self.metal = check_choice(metal, "metal", ("titanium", "iron"))
        self.e0 = check_positive(e0, "e0")
        self.energies, self.weights = spectrum(kvp)
        self.mu_water = float(mass_attenuation("water", e0))                 # 1/cm per g/cm³
        self.bone_units = float(mass_attenuation("bone", e0)) / self.mu_water  # water units per g/cm³ of bone
        self.bhc = water_correction(self.energies, self.weights, e0, max_g_cm2=1.5 * fov_cm)

    def to(self, device: torch.device | str) -> Scanner:
        """Move the projector and the Radon inversion layer (sparse matrices, rebinning grid) to ``device``, in place;
        returns the scanner, like ``nn.Module.to``. Networks that hold the scanner then project and reconstruct there.

        The physics tables stay on the CPU, where :func:`simulate` runs (its noise comes from a CPU generator):
        simulate on the CPU and move the pairs with :meth:`MARData.to`. Inputs on another device than the
        operators' still work (the operators keep a copy per device), so the CPU simulation needs no second scanner.
        """
        self.fan.to(device)
        self.ril.to(device)
        return self

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Sinograms (line integrals per image width) of images in water units."""
        return self.fan.A(x) / self.n_pixels

    def reconstruct(self, y: torch.Tensor) -> torch.Tensor:
        """``f_R(y)``: images from sinograms, differentiable."""
        return self.ril(y)

    def image_units(self, water: torch.Tensor, bone: torch.Tensor) -> torch.Tensor:
        """Monochromatic attenuation at ``E0`` of density maps, in water units."""
        return water + self.bone_units * bone


@dataclass
class MARData:
    """Simulated pairs, each tensor with a leading batch axis (sinograms ``(B, n_det, n_views)``, images ``(B, N, N)``).

    ``y`` corrupted sinogram, ``trace`` metal trace (bool), ``y_li`` LI sinogram, ``y_gt`` clean sinogram;
    ``x_ma`` corrupted FBP image, ``x_li`` LI image, ``x_gt`` target, ``x_ph`` phantom at ``E0``;
    ``metal`` implant coverage in [0, 1]; ``group`` metal-size group index (or −1).
    """

    y: torch.Tensor
    trace: torch.Tensor
    y_li: torch.Tensor
    y_gt: torch.Tensor
    x_ma: torch.Tensor
    x_li: torch.Tensor
    x_gt: torch.Tensor
    x_ph: torch.Tensor
    metal: torch.Tensor
    group: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: slice | torch.Tensor | int) -> MARData:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return MARData(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> MARData:
        """The same pairs with every tensor on ``device`` (no copy where it is already there)."""
        return MARData(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def simulate(scanner: Scanner, water: torch.Tensor, bone: torch.Tensor, metal: torch.Tensor,
             generator: torch.Generator | None = None, group: torch.Tensor | None = None, target: str = "fbp",
             noise: bool = True, batch: int = 256) -> MARData:
    """Simulate metal-corrupted scans of phantoms ``(B, N, N)`` with implants ``metal`` ``(B, N, N)`` in [0, 1].

    ``target`` "fbp" (default) sets ``x_gt = f_R(y_gt)``; "phantom" sets ``x_gt = x_ph``.
    """
    check_choice(target, "target", ("fbp", "phantom"))
    n = scanner.n_pixels
    for name, t in (("water", water), ("bone", bone), ("metal", metal)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[1:] != (n, n):
            raise ValueError(f"{name} must have shape (B, {n}, {n}), got {tuple(getattr(t, 'shape', ()))}")
    if not (len(water) == len(bone) == len(metal)) or len(water) == 0:
        raise ValueError("water, bone and metal must hold the same, non-zero number of maps")
    if float(metal.min()) < 0 or float(metal.max()) > 1:
        raise ValueError("metal must be a coverage map with values in [0, 1]")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    parts = []
    for s in range(0, len(water), batch):
        w, b, m = water[s: s + batch], bone[s: s + batch], metal[s: s + batch]
        keep = 1 - m
        proj = scanner.fan.A(torch.stack([w * keep, b * keep, m, w, b], 1)).double() * scanner.pixel_cm  # g/cm² (metal: cm)
        densities = {"water": proj[:, 0], "bone": proj[:, 1], scanner.metal: proj[:, 2] * DENSITY[scanner.metal]}
        y_poly = polychromatic_line_integrals(densities, scanner.energies, scanner.weights)
        if noise:
            counts = torch.poisson(scanner.photons * torch.exp(-y_poly), generator=gen).clamp(min=1)
            y_poly = -torch.log(counts / scanner.photons)
        y_mono = torch.from_numpy(np.polyval(scanner.bhc, y_poly.numpy()))
        to_units = scanner.mu_water * scanner.pixel_cm * n       # µ_water·(image width in cm): book sinogram units
        y = (y_mono / to_units).float()
        x_ph = scanner.image_units(w, b)
        y_gt = ((proj[:, 3] + scanner.bone_units * proj[:, 4]) * scanner.mu_water / to_units).float()
        trace = metal_trace(proj[:, 2] / scanner.pixel_cm)
        y_li = linear_interpolation(y, trace)
        with torch.no_grad():
            x_ma, x_li, x_fbp = scanner.reconstruct(torch.stack([y, y_li, y_gt])).unbind(0)
        parts.append(MARData(y, trace, y_li, y_gt, x_ma, x_li, x_fbp if target == "fbp" else x_ph, x_ph, m,
                             torch.full((len(w),), -1, dtype=torch.long)))
    data = MARData(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(MARData)})
    if group is not None:
        data.group = torch.as_tensor(group, dtype=torch.long)
    return data

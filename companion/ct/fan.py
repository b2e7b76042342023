"""Fan-beam geometry (equi-angular arc detector) and DuDoNet's Radon inversion layer.

Geometry (image coordinates of :mod:`companion.ct.parallel`, pixel units). For the view angle ``β`` the
source sits at ``D·(−sin β, cos β)`` and the ray at fan angle ``γ`` leaves it in the direction of angle
``β − π/2 + γ``; ``γ = 0`` is the central ray through the rotation centre. That ray is the parallel ray
with normal angle and offset

    θ = β + γ,        t = D sin γ,                                        (paper, eq. 4.8)

which is all the Radon inversion layer needs: it resamples the fan sinogram on a regular ``(t, θ)``
grid (*rebinning*), ramp-filters along ``t`` and back-projects, three differentiable steps.
Fan sinograms have shape ``(..., n_det, n_views)`` with ``γ_j`` spread uniformly over
``[−γ_max, γ_max]`` and ``β_k = 2πk / n_views``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_int, check_positive
from .operator import SparseOperator
from .parallel import ParallelBeam, uniform_angles


class FanBeam(SparseOperator):
    """Equi-angular fan-beam projector ``A`` (ray driven) with its exact adjoint.

    ``n_pixels``: image side ``N``; ``n_detectors``: bins on the arc; ``n_views``: source positions over
    360°; ``source_distance``: ``D`` in pixels (default ``2.5·N/2``); ``fan_angle``: half-angle
    ``γ_max`` in radians (default ``1.05·arcsin(R/D)`` with ``R = N/2``, so the fan covers the field of
    view). Each ray is sampled every ``step`` pixels (default 0.5, two samples per pixel) with bilinear
    interpolation; line integrals are in pixel lengths.
    """

    def __init__(self, n_pixels: int, n_detectors: int | None = None, n_views: int | None = None,
                 source_distance: float | None = None, fan_angle: float | None = None, step: float = 0.5) -> None:
        super().__init__()
        check_int(n_pixels, "n_pixels", minimum=2)
        self.n_pixels = n_pixels
        self.n_detectors = n_pixels + 1 if n_detectors is None else check_int(n_detectors, "n_detectors", minimum=2)
        self.n_views = round(1.25 * n_pixels) if n_views is None else check_int(n_views, "n_views", minimum=2)
        radius = n_pixels / 2
        self.source_distance = 2.5 * radius if source_distance is None else check_positive(source_distance, "source_distance")
        if self.source_distance <= radius:
            raise ValueError(f"source_distance ({self.source_distance}) must exceed the field-of-view radius ({radius})")
        self.fan_angle = 1.05 * math.asin(radius / self.source_distance) if fan_angle is None else check_positive(fan_angle, "fan_angle")
        if self.fan_angle >= math.pi / 2:
            raise ValueError(f"fan_angle must be below π/2, got {self.fan_angle}")
        check_positive(step, "step")
        self.in_shape, self.out_shape = (n_pixels, n_pixels), (self.n_detectors, self.n_views)

        d = self.source_distance
        gammas, betas = self.gammas.double(), self.betas.double()
        g, b = torch.meshgrid(gammas, betas, indexing="ij")                   # (n_det, n_views)
        src = torch.stack([-d * torch.sin(b), d * torch.cos(b)], -1)
        phi = b - math.pi / 2 + g
        direction = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
        reach = math.sqrt(2) * radius + 1
        ell = torch.arange(d - reach, d + reach, step, dtype=torch.float64)
        pts = src[..., None, :] + ell[:, None] * direction[..., None, :]      # (n_det, n_views, L, 2) as (u, v)
        col = pts[..., 0] + n_pixels // 2
        row = n_pixels // 2 - pts[..., 1]
        ray = torch.arange(self.n_detectors * self.n_views).view(self.n_detectors, self.n_views, 1).expand_as(col)
        r0, c0 = torch.floor(row), torch.floor(col)
        fr, fc = row - r0, col - c0
        rows, cols, vals = [], [], []
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0.long() + dr, c0.long() + dc
            keep = (rr >= 0) & (rr < n_pixels) & (cc >= 0) & (cc < n_pixels) & (w > 0)
            rows.append(ray[keep])
            cols.append((rr * n_pixels + cc)[keep])
            vals.append((w * step)[keep])
        self._set_matrix(torch.cat(rows), torch.cat(cols), torch.cat(vals).float())

    @property
    def gammas(self) -> torch.Tensor:
        """Fan angles ``γ_j`` of the detector bins (radians)."""
        return torch.linspace(-self.fan_angle, self.fan_angle, self.n_detectors)

    @property
    def betas(self) -> torch.Tensor:
        """View angles ``β_k`` of the source (radians)."""
        return uniform_angles(self.n_views, 2 * math.pi).float()

    def extra_repr(self) -> str:
        return (f"n_pixels={self.n_pixels}, n_detectors={self.n_detectors}, n_views={self.n_views}, "
                f"D={self.source_distance:.4g}, fan_angle={self.fan_angle:.4g}")


def rebinning_grid(fan: FanBeam, n_t: int | None = None, n_theta: int | None = None,
                   span: float = math.pi) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Where each parallel ray ``(t_i, θ_l)`` lies in the fan sinogram, for ``grid_sample``.

    Returns ``(grid, Δt, θ)``: ``grid`` of shape ``(n_t, n_θ, 2)`` holds normalised (view, detector)
    coordinates in the fan sinogram padded circularly by one view on each side; ``t`` spans
    ``[−D sin γ_max, D sin γ_max]`` with ``n_t`` samples (default ``n_det``), ``θ`` spans ``[0, span)``
    with ``n_θ`` samples (default ``n_views·span/2π``). Over 360° every parallel ray is measured twice, so
    ``span = π`` (the default) is enough; ``span = 2π`` uses both measurements.
    """
    if span not in (math.pi, 2 * math.pi):
        raise ValueError(f"span must be π or 2π, got {span}")
    n_t = fan.n_detectors if n_t is None else check_int(n_t, "n_t", minimum=2)
    n_theta = max(1, round(fan.n_views * span / (2 * math.pi))) if n_theta is None else check_int(n_theta, "n_theta")
    d = fan.source_distance
    t_max = d * math.sin(fan.fan_angle)
    spacing = 2 * t_max / (n_t - 1)
    # centred on bin n_t // 2, as ParallelBeam's detector (for odd n_t this is linspace(-t_max, t_max))
    t = (torch.arange(n_t, dtype=torch.float64) - n_t // 2) * spacing
    theta = uniform_angles(n_theta, span)
    tt, th = torch.meshgrid(t, theta, indexing="ij")
    gamma = torch.asin(tt / d)
    beta = torch.remainder(th - gamma, 2 * math.pi)
    d_gamma = 2 * fan.fan_angle / (fan.n_detectors - 1)
    det = (gamma + fan.fan_angle) / d_gamma                          # 0 .. n_det-1
    view = beta / (2 * math.pi / fan.n_views) + 1                    # +1: one padded view on the left
    grid = torch.stack([2 * view / (fan.n_views + 1) - 1, 2 * det / (fan.n_detectors - 1) - 1], -1)
    return grid.float(), spacing, theta


def rebin(y_fan: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample fan sinograms ``(..., n_det, n_views)`` at ``grid`` (from :func:`rebinning_grid`), bilinearly."""
    lead = y_fan.shape[:-2]
    flat = y_fan.reshape(-1, 1, *y_fan.shape[-2:])
    padded = torch.cat([flat[..., -1:], flat, flat[..., :1]], dim=-1)  # β is periodic: wrap one view each side
    g = grid.to(device=y_fan.device, dtype=y_fan.dtype).expand(flat.shape[0], *grid.shape)
    out = F.grid_sample(padded, g, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(*lead, *grid.shape[:2])


class RadonInversionLayer(nn.Module):
    """DuDoNet's ``f_R``: fan sinogram -> image by rebinning, Ram-Lak filtering and back-projection.

    Linear and differentiable end to end; its gradient with respect to the sinogram is the adjoint of
    these three steps (a projection), so an image-domain loss reaches the sinogram. ``scale`` multiplies
    the output (e.g. ``N`` when sinograms are stored as line integrals per image width). ``span = 2π``
    rebins to θ ∈ [0, 2π) and averages the two measurements of every line (default π: one of them).
    """

    def __init__(self, fan: FanBeam, n_t: int | None = None, n_theta: int | None = None, filter: str = "ramp",
                 scale: float = 1.0, span: float = math.pi) -> None:
        super().__init__()
        if not isinstance(fan, FanBeam):
            raise TypeError(f"fan must be a FanBeam, got {type(fan).__name__}")
        grid, spacing, theta = rebinning_grid(fan, n_t, n_theta, span)
        self.register_buffer("grid", grid)
        self.in_shape = fan.out_shape
        self.parallel = ParallelBeam(fan.n_pixels, theta, n_detectors=grid.shape[0], detector_spacing=spacing)
        self.filter = filter
        self.scale = check_positive(scale, "scale")   # over 2π, fbp's weight π/n_θ already averages the two copies

    def rebin(self, y_fan: torch.Tensor) -> torch.Tensor:
        """The parallel-beam sinogram ``(..., n_t, n_θ)`` of fan sinograms ``(..., n_det, n_views)``."""
        if not isinstance(y_fan, torch.Tensor) or y_fan.ndim < 2 or tuple(y_fan.shape[-2:]) != self.in_shape:
            raise ValueError(f"fan sinograms must have shape (..., {self.in_shape[0]}, {self.in_shape[1]}), "
                             f"got {tuple(getattr(y_fan, 'shape', ()))}")
        return rebin(y_fan, self.grid)

    def forward(self, y_fan: torch.Tensor) -> torch.Tensor:
        return self.parallel.fbp(self.rebin(y_fan), self.filter) * self.scale

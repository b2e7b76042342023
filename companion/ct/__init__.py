"""Differentiable CT in torch, and DuDoNet for metal artifact reduction.

- :mod:`~companion.ct.operator`: a sparse linear operator with an exact adjoint and autograd;
- :mod:`~companion.ct.parallel`: parallel-beam Radon transform, back-projection, ramp filters, FBP;
- :mod:`~companion.ct.fan`: fan-beam projector, rebinning and the Radon inversion layer (RIL);
- :mod:`~companion.ct.phantoms`: random-ellipse bodies, Shepp–Logan, metal implants;
- :mod:`~companion.ct.physics`: spectrum, attenuation tables, beam hardening;
- :mod:`~companion.ct.simulate`: the scanner and the metal-artifact simulation;
- :mod:`~companion.ct.mar`: metal trace, LI and NMAR;
- :mod:`~companion.ct.datasets`: the chapter's training and test sets;
- :mod:`~companion.ct.dudonet`: U-Net with mask pyramid, SE-Net, IE-Net, losses, training;
- :mod:`~companion.ct.evaluate`: PSNR/SSIM outside the metal, per metal-size group;
- :mod:`~companion.ct.weights`: the shipped weights' configuration and training.
"""
from .fan import FanBeam, RadonInversionLayer, rebin, rebinning_grid
from .operator import SparseOperator
from .parallel import FILTERS, ParallelBeam, filter_sinogram, ramp_filter, uniform_angles

__all__ = ["FILTERS", "FanBeam", "ParallelBeam", "RadonInversionLayer", "SparseOperator", "filter_sinogram",
           "ramp_filter", "rebin", "rebinning_grid", "uniform_angles"]

"""Companion package of the executable book *Robust deep learning for imaging*.

Notebooks explain; this package computes. One module per concern: :mod:`companion.data`,
:mod:`companion.nets`, :mod:`companion.train`, :mod:`companion.attacks`, :mod:`companion.metrics`,
:mod:`companion.defenses`, :mod:`companion.inverse` (forward operators), :mod:`companion.recon`
(robust reconstruction), :mod:`companion.ct` (differentiable CT, metal artifacts, DuDoNet),
:mod:`companion.record`, :mod:`companion.regression`.
"""
from .record import record, use_records_file
from .utils import device, seed_everything, set_threads

__all__ = ["device", "record", "seed_everything", "set_threads", "use_records_file"]
__version__ = "0.1.0"

"""Companion package of the executable book *Robust deep learning for imaging*.

Notebooks explain; this package computes. One module per concern: :mod:`companion.data`,
:mod:`companion.nets`, :mod:`companion.train`, :mod:`companion.attacks`, :mod:`companion.metrics`,
:mod:`companion.defenses`, :mod:`companion.inverse` (forward operators), :mod:`companion.recon`
(robust reconstruction), :mod:`companion.ct` (differentiable CT, metal artifacts, DuDoNet),
:mod:`companion.record`, :mod:`companion.regression`.
"""
from importlib.metadata import PackageNotFoundError, version as _version

from .record import record, use_records_file
from .utils import device, seed_everything, set_threads

__all__ = ["device", "record", "seed_everything", "set_threads", "use_records_file"]

# The version is written in pyproject.toml only and read here from the installed distribution's metadata
# (an editable install records it at install time: `make setup` reinstalls when pyproject.toml changes).
# Imported from a source tree that was never installed, the version is unknown.
try:
    __version__ = _version("robust-imaging-companion")
except PackageNotFoundError:
    __version__ = "0+unknown"

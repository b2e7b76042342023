"""Companion package of the executable book *Robust deep learning for imaging*.

Notebooks explain; this package computes, one home per method (README, section "Architecture"):

* shared ground: :mod:`companion.data` (embedded and real data sets), :mod:`companion.nets` (classifiers),
  :mod:`companion.train` (the one training loop), :mod:`companion.utils` (seeds, threads, device),
  :mod:`companion.viz` (figures, tables, widgets), :mod:`companion._validate` (argument checks);
* methods: :mod:`companion.attacks`, :mod:`companion.metrics`, :mod:`companion.defenses`, :mod:`companion.gan`,
  :mod:`companion.inverse` (forward operators), :mod:`companion.recon` (robust reconstruction),
  :mod:`companion.ct` (differentiable CT, metal artifacts, DuDoNet), :mod:`companion.clustering` (PAHC, DDC,
  baselines), :mod:`companion.compression` (semantic JPEG), :mod:`companion.recovery` (MimicGAN),
  :mod:`companion.repr` (RePr), :mod:`companion.pretrained` (the shipped weights);
* the harness, which runs, checks and publishes the chapters: :mod:`companion.record`,
  :mod:`companion.expected`, :mod:`companion.regression`, :mod:`companion.calibration`,
  :mod:`companion.bookbuild`, :mod:`companion.notebooks` (the reader notebooks), :mod:`companion.cli`.
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

"""Variable-quality JPEG (eq. 2.7 and Algorithm 1 of Prakash et al., 2017) and the authors' released variant.

Every file here is a plain baseline JPEG written by Pillow with the same settings for the baseline and the
method: Huffman optimisation (``optimize=True``), not progressive, 4:4:4 chroma for RGB (``subsampling=0``,
so that an 8×8 block of the mosaic is one coding block in every channel). Qualities are *continuous* IJG
qualities in [1, 100]: :func:`ijg_tables` builds the quantisation tables, which Pillow receives as
``qtables``, so an integer quality gives byte for byte the file of Pillow's ``quality=q``.

Images are numpy ``uint8`` arrays, ``(H, W)`` grayscale or ``(H, W, 3)`` RGB, of any size; saliency maps are
real ``(H, W)`` arrays in [0, 1] (1 = most salient); block levels are integer arrays of shape
``(ceil(H/8), ceil(W/8))``, one entry per 8×8 block (partial blocks at the right and bottom edges included).

Size matching is one-sided: :func:`semantic_jpeg` never returns a file larger than its target, and reports
the achieved ratio; :func:`at_equal_bytes` interpolates the baseline's rate-distortion curve for comparisons
at exactly equal size.

The file size is almost, not exactly, monotone in the quality: on a fine grid of qualities (steps of 0.05),
7 to 25 % of the steps made the file of our test photos a few bytes smaller (at most 2 %) instead of larger,
through the Huffman tables and, in a mosaic, re-quantisation. The size search is a bisection that only ever
keeps files of at most the target, so the bound holds whatever the jitter; what the jitter and the jumps of the
size at high qualities (many table entries reaching 1 at once) can cost is the last 1 % below the target, which
:attr:`SemanticJPEG.ratio` then shows.
"""
from __future__ import annotations

import io
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .._validate import check_choice, check_int

# Full-range RGB -> YCbCr of JPEG (JFIF, ITU-R BT.601 weights) on [0, 1] values; Cb and Cr are offset by 0.5.
# The one home of these weights: the luma metrics and the wavelet denoiser's colour transform read them here.
JPEG_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])

__all__ = [
    "ANNEX_K_CHROMA", "ANNEX_K_LUMA", "BLOCK", "JPEG_YCBCR", "RULES", "SemanticJPEG", "at_equal_bytes", "block_levels",
    "decode",
    "encode", "ijg_scale", "ijg_tables", "level_mosaic", "median_mosaic", "quality_ladder", "rd_curve",
    "released_encoder", "semantic_jpeg", "shuffled_levels", "uniform_levels",
]

# The luminance quantisation table of the JPEG standard (ITU-T T.81, Annex K, Table K.1), row-major (natural) order
ANNEX_K_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)
ANNEX_K_LUMA.setflags(write=False)

# The chrominance quantisation table of the JPEG standard (ITU-T T.81, Annex K, Table K.2), row-major order
ANNEX_K_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32, dtype=np.int64)
ANNEX_K_CHROMA.setflags(write=False)

BLOCK = 8   # side of a JPEG coding block in pixels (4:4:4, so the same in every channel)

# The final-pass rules of :func:`semantic_jpeg`: "shift" (the spec's R1) and "literal" (R2)
RULES = ("shift", "literal")

_DIVISORS = ("k-1", "k")
_REDUCTIONS = ("mean", "max")


# --------------------------------------------------------------------------- validation
def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    return v


def _quality(value: Any, name: str = "quality") -> float:
    q = _real(value, name)
    if not 1.0 <= q <= 100.0:
        raise ValueError(f"{name} must be an IJG quality in [1, 100], got {value}")
    return q


def _count(value: Any, name: str, minimum: int = 1) -> int:
    """An integer (Python or numpy) >= ``minimum``."""
    return check_int(int(value) if isinstance(value, np.integer) else value, name, minimum=minimum)


def _check_image(image: Any, name: str = "image") -> np.ndarray:
    """A non-empty ``uint8`` array ``(H, W)`` or ``(H, W, 3)``, returned C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H, W) or (H, W, 3) of dtype uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (values 0..255), got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{name} must have shape (H, W) (grayscale) or (H, W, 3) (RGB), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def _check_map(saliency: Any, shape: tuple[int, ...] | None = None, name: str = "saliency") -> np.ndarray:
    """A real or boolean ``(H, W)`` array with finite values in [0, 1], as float64."""
    if not isinstance(saliency, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H, W) with values in [0, 1], got {type(saliency).__name__}")
    if not (saliency.dtype == np.bool_ or np.issubdtype(saliency.dtype, np.integer)
            or np.issubdtype(saliency.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers in [0, 1], got dtype {saliency.dtype}")
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (H, W), got shape {saliency.shape}")
    if shape is not None and saliency.shape != tuple(shape[:2]):
        raise ValueError(f"{name} must have the image's shape (H, W) = {tuple(shape[:2])}, got {saliency.shape}")
    s = saliency.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(s.min()), float(s.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (normalise the map first), got range [{lo:.3g}, {hi:.3g}]")
    return s


def _grid(shape: tuple[int, ...]) -> tuple[int, int]:
    return -(-shape[0] // BLOCK), -(-shape[1] // BLOCK)


def _check_levels(levels: Any, shape: tuple[int, ...], n_levels: int, name: str = "levels") -> np.ndarray:
    """Integer block levels in ``0 .. n_levels - 1`` on the block grid of an image of ``shape``."""
    if not isinstance(levels, np.ndarray):
        raise TypeError(f"{name} must be a numpy integer array of block levels, got {type(levels).__name__}")
    if not np.issubdtype(levels.dtype, np.integer):
        raise TypeError(f"{name} must hold integer block levels, got dtype {levels.dtype} "
                        "(a saliency map goes through block_levels first)")
    grid = _grid(shape)
    if levels.shape != grid:
        raise ValueError(f"{name} must have one entry per {BLOCK}x{BLOCK} block, shape {grid} for an image of "
                         f"shape {tuple(shape[:2])}, got {levels.shape}")
    lo, hi = int(levels.min()), int(levels.max())
    if lo < 0 or hi >= n_levels:
        raise ValueError(f"{name} must lie in 0..{n_levels - 1} ({n_levels} levels), got range [{lo}, {hi}]")
    return levels.astype(np.intp)


def _check_range(q_low: Any, q_high: Any) -> tuple[float, float]:
    lo, hi = _quality(q_low, "q_low"), _quality(q_high, "q_high")
    if lo >= hi:
        raise ValueError(f"q_low must be below q_high, got q_low={q_low}, q_high={q_high}")
    return lo, hi


# --------------------------------------------------------------------------- one JPEG
def ijg_scale(quality: float) -> float:
    """The IJG scale factor S (in percent of the Annex K tables) of a continuous quality in [1, 100].

    At an integer quality ``q`` it is libjpeg's ``5000 // q`` below 50 (integer division) and ``200 − 2q`` from
    50 up; between two integers it is interpolated linearly, so S is continuous and decreasing in the quality
    and integer qualities give libjpeg's tables exactly (above 50 this is just ``200 − 2q``).
    """
    q = _quality(quality)

    def integer_scale(n: int) -> float:
        return float(5000 // n) if n < 50 else float(200 - 2 * n)

    lo = math.floor(q)
    if lo == q:
        return integer_scale(lo)
    t = q - lo
    return (1.0 - t) * integer_scale(lo) + t * integer_scale(lo + 1)


def _tables(scale: float, channels: int) -> list[list[int]]:
    def table(base: np.ndarray) -> list[int]:
        return np.clip(np.floor((base * scale + 50.0) / 100.0), 1, 255).astype(int).tolist()

    return [table(ANNEX_K_LUMA)] if channels == 1 else [table(ANNEX_K_LUMA), table(ANNEX_K_CHROMA)]


def ijg_tables(quality: float, channels: int) -> list[list[int]]:
    """The quantisation tables of a continuous IJG quality, as Pillow's ``qtables=`` takes them.

    Each entry is ``floor((base · S + 50) / 100)`` clipped to [1, 255] (baseline JPEG), with ``base`` the Annex K
    table (:data:`ANNEX_K_LUMA`, :data:`ANNEX_K_CHROMA`) and ``S = ijg_scale(quality)``
    (:func:`ijg_scale`), in row-major (natural) order. ``channels = 1`` gives ``[luma]``, ``channels = 3``
    ``[luma, chroma]`` (the chroma table serves Cb and Cr). Encoding with these tables reproduces Pillow's
    ``quality=q`` byte for byte at every integer ``q`` (tested).
    """
    scale = ijg_scale(quality)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return _tables(scale, int(channels))


def _save(image: np.ndarray, tables: list[list[int]]) -> bytes:
    buffer = io.BytesIO()
    options = {"subsampling": 0} if image.ndim == 3 else {}
    Image.fromarray(image).save(buffer, format="JPEG", qtables=tables, optimize=True, progressive=False, **options)
    return buffer.getvalue()


def _encode(image: np.ndarray, quality: float) -> bytes:
    """:func:`encode` without the checks; ``quality`` is clipped into [1, 100] (rounding error of a shifted ladder)."""
    q = min(max(quality, 1.0), 100.0)
    return _save(image, _tables(ijg_scale(q), 1 if image.ndim == 2 else 3))


def encode(image: np.ndarray, quality: float) -> bytes:
    """A baseline JPEG file of ``image`` at a continuous IJG ``quality`` in [1, 100] (tables of :func:`ijg_tables`).

    Pillow, ``optimize=True`` (optimised Huffman tables), not progressive, 4:4:4 for RGB.
    """
    image = _check_image(image)
    _quality(quality)
    return _encode(image, float(quality))


def decode(data: bytes) -> np.ndarray:
    """The ``uint8`` pixels of a JPEG file: ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the bytes of a JPEG file, got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            if im.format != "JPEG" or im.mode not in ("L", "RGB"):
                raise ValueError(f"data must be a grayscale or RGB JPEG file, got {im.format} in mode {im.mode}")
            return np.array(im)
    except OSError as err:   # Pillow's UnidentifiedImageError and truncated files
        raise ValueError(f"data is not a readable JPEG file ({err})") from err


def _round_trip(image: np.ndarray, quality: float) -> np.ndarray:
    return decode(_encode(image, quality))


def rd_curve(image: np.ndarray, qualities: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Standard JPEG of ``image`` at each quality: the file sizes in bytes (an int64 array) and the decoded images.

    The baseline's rate-distortion curve, with the encoder settings of :func:`encode`.
    """
    image = _check_image(image)
    qs = [_quality(q, f"qualities[{i}]") for i, q in enumerate(qualities)]
    if not qs:
        raise ValueError("qualities is empty")
    files = [_encode(image, q) for q in qs]
    return np.array([len(f) for f in files], dtype=np.int64), [decode(f) for f in files]


def at_equal_bytes(target_bytes: float, sizes: Sequence[float], values: Sequence[float]) -> float:
    """A metric of the baseline interpolated at ``target_bytes`` along its rate-distortion curve.

    ``sizes`` (bytes) and ``values`` (e.g. PSNR) are the points of :func:`rd_curve` in any order; the value is
    interpolated **linearly in log-bytes** between the two points around ``target_bytes`` (PSNR is close to
    linear in log-rate at these rates). No extrapolation: the target must lie within the sizes' range, and the
    sizes must be distinct.
    """
    target = _real(target_bytes, "target_bytes")
    s = np.asarray(sizes, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if s.size != v.size or s.size < 2:
        raise ValueError(f"sizes and values must have the same length >= 2, got {s.size} and {v.size}")
    if not (np.isfinite(s).all() and np.isfinite(v).all()):
        raise ValueError("sizes and values must be finite")
    if (s <= 0).any() or target <= 0:
        raise ValueError("sizes and target_bytes must be > 0 bytes")
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    if (np.diff(s) == 0).any():
        raise ValueError("sizes must be distinct (two qualities gave the same file size): drop duplicates")
    if not s[0] <= target <= s[-1]:
        raise ValueError(f"target_bytes {target:g} lies outside the curve's sizes [{s[0]:g}, {s[-1]:g}]: "
                         "add lower or higher qualities to the curve (no extrapolation)")
    return float(np.interp(math.log(target), np.log(s), v))


# --------------------------------------------------------------------------- levels and mosaics
def quality_ladder(k: int = 5, q_low: float = 30, q_high: float = 70, divisor: str = "k-1") -> tuple[float, ...]:
    """The ``k`` qualities ``Q_n = Q_l + n (Q_h − Q_l) / d`` of eq. 2.7, ``n = 0 .. k − 1``.

    ``divisor="k-1"`` (default) spans the range, 30, 40, …, 70 for the defaults, as the document's numbers
    require; ``divisor="k"`` is its literal formula, 30, 38, 46, 54, 62.
    """
    k = _count(k, "k", minimum=2)
    lo, hi = _check_range(q_low, q_high)
    d = (k - 1) if check_choice(divisor, "divisor", _DIVISORS) == "k-1" else k
    return tuple(lo + n * (hi - lo) / d for n in range(k))


def block_levels(saliency: np.ndarray, k: int = 5, block: int = BLOCK, reduce: str = "mean") -> np.ndarray:
    """The level ``min(floor(s · k), k − 1)`` of each square block, an int array ``(ceil(H/block), ceil(W/block))``.

    ``s`` is the block's mean saliency (``reduce="mean"``) or its maximum (``"max"``, conservative: one salient
    pixel lifts the block); partial blocks at the right and bottom edges average their own pixels. Level 0 holds
    ``s < 1/k``, level ``n`` holds ``n/k <= s < (n+1)/k``, the top level also ``s = 1``. The encoders use
    ``block = 8``, JPEG's block.
    """
    s = _check_map(saliency)
    k = _count(k, "k", minimum=2)
    block = _count(block, "block")
    check_choice(reduce, "reduce", _REDUCTIONS)
    rows, cols = np.arange(0, s.shape[0], block), np.arange(0, s.shape[1], block)
    if reduce == "max":
        value = np.maximum.reduceat(np.maximum.reduceat(s, rows, axis=0), cols, axis=1)
    else:
        sums = np.add.reduceat(np.add.reduceat(s, rows, axis=0), cols, axis=1)
        heights = np.diff(np.append(rows, s.shape[0]))
        widths = np.diff(np.append(cols, s.shape[1]))
        value = sums / np.outer(heights, widths)
    return np.minimum(np.floor(value * k), k - 1).astype(np.intp)


def _pixel_levels(levels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.repeat(np.repeat(levels, BLOCK, axis=0), BLOCK, axis=1)[: shape[0], : shape[1]]


def _mosaic(image: np.ndarray, levels: np.ndarray, qualities: Sequence[float]) -> np.ndarray:
    out = np.empty_like(image)
    pixels = _pixel_levels(levels, image.shape)
    for n in np.unique(levels):   # only the levels in use are encoded
        chosen = pixels == n
        out[chosen] = _round_trip(image, qualities[n])[chosen]
    return out


def level_mosaic(image: np.ndarray, levels: np.ndarray, qualities: Sequence[float]) -> np.ndarray:
    """Algorithm 1, steps 3–4: each 8×8 block copied from the decode of the whole image at its level's quality.

    ``levels`` are block levels (:func:`block_levels`), ``qualities[n]`` the quality of level ``n``
    (:func:`quality_ladder`). Only the levels that occur are encoded. Returns a ``uint8`` image like ``image``.
    """
    image = _check_image(image)
    qs = [_quality(q, f"qualities[{i}]") for i, q in enumerate(qualities)]
    levels = _check_levels(levels, image.shape, len(qs))
    return _mosaic(image, levels, qs)


def median_mosaic(image: np.ndarray, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mosaic of the authors' released encoder (:func:`released_encoder`) and its pixel levels.

    Per pixel (not per block), in every channel, the value of the quality-80 decode where the map is below its
    median and of the quality-100 decode elsewhere. Returns the mosaic and the ``(H, W)`` int array of levels
    (0: quality 80, 1: quality 100). A map that is constant on more than half of the image has that value as
    its median, so e.g. a 0/1 mask covering less than half of the image takes every pixel from quality 100.
    """
    image = _check_image(image)
    s = _check_map(saliency, image.shape)
    high = s >= np.median(s)
    mosaic = np.where(high if image.ndim == 2 else high[..., None],
                      _round_trip(image, 100.0), _round_trip(image, 80.0))
    return mosaic, high.astype(np.intp)


def uniform_levels(levels: np.ndarray, level: int | None = None) -> np.ndarray:
    """A control map: every block at one ``level``, by default the rounded mean of ``levels`` (half rounds up).

    Same shape as ``levels``; through :func:`semantic_jpeg` (``levels=``) it isolates what the two-pass encoder
    does without any spatial allocation.
    """
    if not isinstance(levels, np.ndarray) or not np.issubdtype(levels.dtype, np.integer) or levels.ndim != 2:
        raise TypeError("levels must be a 2-D numpy integer array of block levels (see block_levels)")
    if (levels < 0).any():
        raise ValueError("levels must be >= 0")
    value = math.floor(float(levels.mean()) + 0.5) if level is None else _count(level, "level", minimum=0)
    return np.full(levels.shape, value, dtype=np.intp)


def shuffled_levels(levels: np.ndarray, rng: np.random.Generator | int) -> np.ndarray:
    """A control map: the blocks of ``levels`` randomly permuted (same histogram of levels, random places).

    ``rng`` is a numpy ``Generator`` or an integer seed (no global random state is used).
    """
    if not isinstance(levels, np.ndarray) or not np.issubdtype(levels.dtype, np.integer) or levels.ndim != 2:
        raise TypeError("levels must be a 2-D numpy integer array of block levels (see block_levels)")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")
    return rng.permutation(levels.ravel()).reshape(levels.shape).astype(np.intp)


# --------------------------------------------------------------------------- the encoders
@dataclass(frozen=True, eq=False)
class SemanticJPEG:
    """The result of :func:`semantic_jpeg` or :func:`released_encoder` (frozen)."""

    data: bytes                           #: the JPEG file
    decoded: np.ndarray                   #: its pixels, ``uint8`` like the input image
    levels: np.ndarray                    #: block levels used (the released encoder: per-pixel levels, 0 or 1)
    level_qualities: tuple[float, ...]    #: the quality of each level in the mosaic
    final_quality: float                  #: the quality of the final pass, the one the file was written at
    target_bytes: int                     #: the size that was matched
    rule: str                             #: "shift", "literal" or "released"

    @property
    def size(self) -> int:
        """The file size in bytes."""
        return len(self.data)

    @property
    def ratio(self) -> float:
        """``size / target_bytes``: at most 1 for :func:`semantic_jpeg` (one-sided matching)."""
        return self.size / self.target_bytes


_Trial = tuple[bytes, tuple[float, ...], float]   # file, level qualities, final quality


def _match(trial: Callable[[float], _Trial], lo: float, hi: float, target: int, tolerance: float,
           what: str) -> _Trial:
    """Bisection on a parameter ``t`` in ``[lo, hi]`` for the largest file of at most ``target`` bytes.

    File sizes grow with ``t`` (almost always: see the module's docstring); the search keeps a point at most
    ``target`` and one above it, stops once a file within ``tolerance`` below the target is found or the
    interval is narrower than 1e-3 quality units, and returns the largest file seen that fits.
    """
    best = trial(lo)
    if len(best[0]) > target:
        raise ValueError(f"target_bytes={target} is below the smallest file this {what} can make "
                         f"({len(best[0])} bytes at its lowest setting): raise the target or use a lower or "
                         "narrower q_range")
    top = trial(hi)
    if len(top[0]) <= target:
        return top if len(top[0]) >= len(best[0]) else best
    floor = (1.0 - tolerance) * target
    while hi - lo > 1e-3 and len(best[0]) < floor:
        mid = 0.5 * (lo + hi)
        result = trial(mid)
        if len(result[0]) <= target:
            lo = mid
            if len(result[0]) > len(best[0]):
                best = result
        else:
            hi = mid
    return best


def semantic_jpeg(
    image: np.ndarray,
    saliency: np.ndarray | None,
    target_bytes: int,
    *,
    levels: np.ndarray | None = None,
    k: int = 5,
    q_range: tuple[float, float] = (30, 70),
    divisor: str = "k-1",
    rule: str = "shift",
    reduce: str = "mean",
    tolerance: float = 0.01,
) -> SemanticJPEG:
    """Variable-quality JPEG (Algorithm 1) of at most ``target_bytes`` bytes, as close below it as the rule allows.

    The map is a ``saliency`` map (``(H, W)`` in [0, 1], turned into block levels by :func:`block_levels` with
    ``k`` and ``reduce``) or, with ``saliency=None``, precomputed block ``levels`` in ``0 .. k − 1`` (e.g. the
    controls :func:`uniform_levels`, :func:`shuffled_levels`). Level ``n`` gets quality ``Q_n`` of
    :func:`quality_ladder` (``k``, ``q_range``, ``divisor``); the mosaic of :func:`level_mosaic` is encoded
    once more. ``rule`` chooses the final pass and what the size search moves:

    - ``"shift"`` (the spec's R1, default): the final pass uses the top level's quality ``Q_{k−1}``, and the whole
      ladder, spacing kept, is shifted by one continuous offset, within the offsets that keep every quality in
      [1, 100];
    - ``"literal"`` (R2): the ladder is fixed and only the final pass's quality (in [1, 100]) is searched.

    Matching is one-sided: the file is never larger than ``target_bytes``; the search stops at the first file
    within ``tolerance`` (1 %) below it. When even the top setting is smaller, that file is returned and its
    :attr:`SemanticJPEG.ratio` says so; when even the lowest setting is larger, ``ValueError``.
    """
    image = _check_image(image)
    target = _count(target_bytes, "target_bytes")
    k = _count(k, "k", minimum=2)
    check_choice(rule, "rule", RULES)
    tol = _real(tolerance, "tolerance")
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"tolerance must lie in [0, 1), got {tolerance}")
    if not isinstance(q_range, (tuple, list)) or len(q_range) != 2:
        raise TypeError(f"q_range must be a pair (q_low, q_high), got {q_range!r}")
    ladder = quality_ladder(k, q_range[0], q_range[1], divisor)
    if (saliency is None) == (levels is None):
        raise ValueError("give exactly one of saliency (a map in [0, 1]) and levels (block levels, keyword)")
    if saliency is not None:
        _check_map(saliency, image.shape)
        levels = block_levels(saliency, k, BLOCK, reduce)
    else:
        check_choice(reduce, "reduce", _REDUCTIONS)
        levels = _check_levels(levels, image.shape, k)

    if rule == "shift":
        def trial(shift: float) -> _Trial:
            qs = tuple(q + shift for q in ladder)
            return _encode(_mosaic(image, levels, qs), qs[-1]), qs, qs[-1]

        data, qs, final = _match(trial, 1.0 - ladder[0], 100.0 - ladder[-1], target, tol, "ladder")
    else:
        mosaic = _mosaic(image, levels, ladder)

        def trial(final: float) -> _Trial:
            return _encode(mosaic, final), ladder, final

        data, qs, final = _match(trial, 1.0, 100.0, target, tol, "final pass")
    return SemanticJPEG(data, decode(data), levels, tuple(float(q) for q in qs), float(final), target, rule)


def released_encoder(image: np.ndarray, saliency: np.ndarray, target_bytes: int, *,
                     tolerance: float = 0.0) -> SemanticJPEG:
    """The authors' released encoder ("R0", ``model 6`` of their code), which is not Algorithm 1.

    The per-pixel two-level mosaic of :func:`median_mosaic` (quality 80 below the map's median, 100 elsewhere) is
    encoded at the highest integer quality, searched from 90 downward, whose file is at most
    ``target_bytes · (1 + tolerance)`` (their default slack was 20 %, their README advises 1 %; ``0`` here, i.e.
    one-sided). Unlike their code, the encoder settings are this module's (Huffman-optimised, 4:4:4), the same
    as the baseline's. ``ValueError`` when even quality 1 is too large.
    """
    image = _check_image(image)
    target = _count(target_bytes, "target_bytes")
    slack = _real(tolerance, "tolerance")
    if slack < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    mosaic, pixel_levels = median_mosaic(image, saliency)
    limit = target * (1.0 + slack)
    for q in range(90, 0, -1):
        data = _encode(mosaic, float(q))
        if len(data) <= limit:
            return SemanticJPEG(data, decode(data), pixel_levels, (80.0, 100.0), float(q), target, "released")
    raise ValueError(f"target_bytes={target} is below the released encoder's smallest file "
                     f"({len(data)} bytes at quality 1)")

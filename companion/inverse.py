"""Linear forward operators ``y = A x`` of inverse problems, as torch modules.

All operators derive from :class:`LinearOperator` (also the base of :mod:`companion.ct`'s projectors),
which holds the generic adjointness check. A :class:`MatrixOperator` maps a batch of
images ``(B, C, H, W)`` (or of flat vectors ``(B, n)``) to a batch of measurements ``(B, m)`` and also
offers the pseudo-inverse ``A_dagger``, its singular values and its condition number.
Matrices are registered as buffers, so ``.to(device)`` moves them.

- :func:`gaussian_cs`: compressed sensing with i.i.d. ``N(0, 1/m)`` entries, so ``E‖Ax‖² = ‖x‖²``.
- :func:`with_condition_number`: the same singular vectors, singular values replaced by a log-spaced
  ladder of a chosen condition number (an ill-conditioned twin of any operator).
- :func:`dct_block`: a block of the orthonormal DCT-II matrix (chosen rows and columns), the classic
  small ill-conditioned example; :func:`ill_conditioned_dct_block` picks one with a condition number in
  a given range.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ._validate import check_int, check_positive


class LinearOperator(nn.Module):
    """Base of every forward operator: ``A`` maps ``(B, *in_shape)`` to ``(B, *out_shape)``,
    ``A_adjoint`` back. Subclasses set ``in_shape`` and ``out_shape`` and implement both maps; the
    generic check :meth:`adjointness_error` lives here once."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def adjointness_error(self, batch: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64) -> float:
        """Relative error ``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / (‖Ax‖ ‖y‖)`` on random inputs (0 for an exact adjoint)."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, *self.in_shape, generator=gen, dtype=dtype)
        y = torch.rand(batch, *self.out_shape, generator=gen, dtype=dtype)
        ax, aty = self.A(x), self.A_adjoint(y)
        lhs, rhs = float((ax * y).sum()), float((x * aty).sum())
        return abs(lhs - rhs) / (float(ax.norm()) * float(y.norm()))


class MatrixOperator(LinearOperator):
    """``A x`` for a dense matrix ``A`` of shape ``(m, n)`` acting on images of shape ``in_shape``.

    ``in_shape`` is the shape of one input without the batch axis, e.g. ``(1, 28, 28)`` or ``(n,)``;
    its product must equal ``n``.
    """

    def __init__(self, matrix: torch.Tensor, in_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2 or 0 in matrix.shape:
            raise ValueError("matrix must be a non-empty 2-D torch.Tensor (m, n)")
        if not torch.isfinite(matrix).all():
            raise ValueError("matrix contains NaN or infinite values")
        self.in_shape = tuple(in_shape) if in_shape is not None else (matrix.shape[1],)
        if math.prod(self.in_shape) != matrix.shape[1]:
            raise ValueError(f"in_shape {self.in_shape} has {math.prod(self.in_shape)} entries, "
                             f"but the matrix has {matrix.shape[1]} columns")
        self.out_shape = (matrix.shape[0],)
        self.register_buffer("matrix", matrix.detach().clone())
        self._svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def m(self) -> int:
        """Number of measurements."""
        return self.matrix.shape[0]

    @property
    def n(self) -> int:
        """Number of unknowns (pixels)."""
        return self.matrix.shape[1]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != torch.Size(self.in_shape):
            raise ValueError(f"expected inputs of shape (B, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        return x.reshape(len(x), -1)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Measurements ``(B, m)`` of a batch ``(B, *in_shape)``."""
        return self._flat(x) @ self.matrix.to(x.dtype).T

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y``, shaped like the inputs ``(B, *in_shape)``."""
        self._check_measurements(y)
        return (y @ self.matrix.to(y.dtype)).reshape(len(y), *self.in_shape)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        """Minimum-norm least-squares solution ``A⁺ y``, shaped like the inputs."""
        self._check_measurements(y)
        return (y @ self.pinv().T).reshape(len(y), *self.in_shape)

    def _check_measurements(self, y: torch.Tensor) -> None:
        if y.ndim != 2 or y.shape[1] != self.m:
            raise ValueError(f"expected measurements of shape (B, {self.m}), got {tuple(y.shape)}")

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``U, s, Vᵀ`` of the matrix (thin SVD, singular values in decreasing order), cached."""
        if self._svd is None or self._svd[1].device != self.matrix.device or self._svd[1].dtype != self.matrix.dtype:
            u, s, vt = torch.linalg.svd(self.matrix.double(), full_matrices=False)
            self._svd = (u.to(self.matrix.dtype), s.to(self.matrix.dtype), vt.to(self.matrix.dtype))
        return self._svd

    def singular_values(self) -> torch.Tensor:
        """Singular values, decreasing."""
        return self.svd()[1]

    def condition_number(self) -> float:
        """``s_max / s_min`` over the non-zero singular values (``inf`` when some vanish)."""
        s = self.singular_values()
        rank = int((s > s[0] * max(self.matrix.shape) * torch.finfo(s.dtype).eps).sum())
        return float(s[0] / s[rank - 1]) if rank == len(s) else math.inf

    def pinv(self) -> torch.Tensor:
        """The pseudo-inverse ``A⁺`` of shape ``(n, m)``."""
        return torch.linalg.pinv(self.matrix.double()).to(self.matrix.dtype)

    def extra_repr(self) -> str:
        return f"m={self.m}, n={self.n}, in_shape={self.in_shape}"


def gaussian_cs(m: int, in_shape: Sequence[int], *, seed: int = 0) -> MatrixOperator:
    """Compressed sensing: ``m`` measurements by a matrix with i.i.d. ``N(0, 1/m)`` entries."""
    check_int(m, "m")
    if len(in_shape) == 0 or any(not isinstance(d, int) or d < 1 for d in in_shape):
        raise ValueError(f"in_shape must be a non-empty sequence of positive integers, got {in_shape!r}")
    n = math.prod(in_shape)
    gen = torch.Generator().manual_seed(seed)
    return MatrixOperator(torch.randn(m, n, generator=gen) / math.sqrt(m), in_shape)


def with_condition_number(op: MatrixOperator, condition_number: float) -> MatrixOperator:
    """An operator with the singular vectors of ``op`` and singular values
    ``s_max · logspace(0, −log10(condition_number), r)``: the same geometry, controllable conditioning."""
    check_positive(condition_number, "condition_number")
    if condition_number < 1:
        raise ValueError(f"condition_number must be >= 1, got {condition_number}")
    if op.condition_number() == math.inf:
        raise ValueError("the operator is rank-deficient; its zero singular values cannot be given a condition number")
    u, s, vt = op.svd()
    ladder = s[0] * torch.logspace(0, -math.log10(condition_number), len(s), dtype=s.dtype)
    return MatrixOperator((u * ladder) @ vt, op.in_shape)


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(n, n)``: row ``k`` is the ``k``-th cosine basis vector."""
    check_int(n, "n")
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * j + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return torch.from_numpy(c)


def dct_block(n: int, rows: Sequence[int], cols: Sequence[int]) -> MatrixOperator:
    """The sub-matrix of the ``n``-point orthonormal DCT-II on the given rows and columns (float64)."""
    c = dct_matrix(n)
    rows_t, cols_t = torch.as_tensor(list(rows)), torch.as_tensor(list(cols))
    if len(rows_t) == 0 or len(cols_t) == 0 or rows_t.min() < 0 or cols_t.min() < 0 or max(rows_t.max(), cols_t.max()) >= n:
        raise ValueError(f"rows and cols must be non-empty indices in [0, {n})")
    return MatrixOperator(c[rows_t][:, cols_t], (len(cols_t),))


def ill_conditioned_dct_block(
    size: int = 20, n: int = 64, *, cond_range: tuple[float, float] = (50.0, 1000.0), first_seed: int = 0,
    max_tries: int = 100,
) -> tuple[MatrixOperator, int]:
    """A random ``size × size`` block of the ``n``-point DCT whose condition number lies in ``cond_range``.

    Seeds ``first_seed, first_seed + 1, …`` draw rows and columns at random (sorted); the first block
    that qualifies is returned with its seed.
    """
    check_int(size, "size")
    if size > n:
        raise ValueError(f"size ({size}) must not exceed n ({n})")
    for seed in range(first_seed, first_seed + max_tries):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size, replace=False))
        cols = np.sort(rng.choice(n, size, replace=False))
        op = dct_block(n, rows, cols)
        if cond_range[0] <= op.condition_number() <= cond_range[1]:
            return op, seed
    raise ValueError(f"no {size}x{size} block of the {n}-point DCT with condition number in {cond_range} "
                     f"among seeds {first_seed}..{first_seed + max_tries - 1}")

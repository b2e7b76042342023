"""A linear operator stored as a sparse matrix, with an exact adjoint and autograd support.

Every projector of :mod:`companion.ct` is a matrix ``W`` of shape ``(m, n)`` with a few non-zeros
per column: ``n`` pixels of an image, ``m`` rays of a sinogram. Storing ``W`` and ``Wᵀ`` as sparse CSR
matrices gives three things at once:

* ``A x = W x`` and ``A_adjoint y = Wᵀ y`` are exact adjoints of each other, by construction;
* a whole batch is one sparse-times-dense product (fast on a CPU, and on a GPU);
* the gradient of ``A`` is ``A_adjoint`` and vice versa (``_SparseProduct``), so losses computed
  after a projection or a back-projection send their gradients through the other operator.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..inverse import LinearOperator


class _SparseProduct(torch.autograd.Function):
    """``x ↦ x Wᵀ`` for rows ``x`` of shape ``(B, n)``; the backward pass is the same product with ``Wᵀ``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.matrices = (w, wt)
        return (w @ x.T.contiguous()).T

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        w, wt = ctx.matrices
        return _SparseProduct.apply(grad, wt, w), None, None


def sparse_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix from coordinate lists; repeated ``(row, col)`` pairs are summed."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "sparse CSR support is in beta": CSR @ dense is all we use
        return coo.to_sparse_csr()


class SparseOperator(LinearOperator):
    """``y = A x`` with ``A`` a fixed sparse matrix from images ``in_shape`` to measurements ``out_shape``.

    Inputs may carry any leading batch dimensions: ``(..., *in_shape) -> (..., *out_shape)``.
    Subclasses build the matrix and call ``_set_matrix``.
    """

    def _set_matrix(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
        m, n = math.prod(self.out_shape), math.prod(self.in_shape)
        self._w = sparse_csr(rows, cols, values, (m, n))
        self._wt = sparse_csr(cols, rows, values, (n, m))
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """``.to(device)``, ``.cuda()`` and ``.cpu()`` also move the sparse matrices (not registered buffers: they
        stay out of the state dict). Only their device follows; their dtype stays, :meth:`_matrices` casts per input."""
        super()._apply(fn, recurse)
        device = fn(torch.empty(0, device=self._w.device)).device   # where this call sends a tensor of ours
        if device != self._w.device:
            self._w, self._wt, self._cache = self._w.to(device), self._wt.to(device), {}
        return self

    def _matrices(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.dtype, like.device)
        if key == (self._w.dtype, self._w.device):
            return self._w, self._wt
        if key not in self._cache:
            self._cache[key] = (self._w.to(device=like.device, dtype=like.dtype),
                                self._wt.to(device=like.device, dtype=like.dtype))
        return self._cache[key]

    @property
    def nnz(self) -> int:
        """Number of stored non-zeros of the matrix."""
        return int(self._w.values().numel())

    def _apply_matrix(self, x: torch.Tensor, shape_in: tuple[int, ...], shape_out: tuple[int, ...],
                      transpose: bool, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor")
        k = len(shape_in)
        if x.ndim < k or tuple(x.shape[-k:]) != shape_in:
            raise ValueError(f"{name} must end with shape {shape_in}, got {tuple(x.shape)}")
        lead = x.shape[:-k]
        flat = x.reshape(-1, math.prod(shape_in))
        w, wt = self._matrices(x)
        out = _SparseProduct.apply(flat, wt, w) if transpose else _SparseProduct.apply(flat, w, wt)
        return out.reshape(*lead, *shape_out)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward projection ``(..., *in_shape) -> (..., *out_shape)``."""
        return self._apply_matrix(x, self.in_shape, self.out_shape, False, "x")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint (back-projection) ``(..., *out_shape) -> (..., *in_shape)``."""
        return self._apply_matrix(y, self.out_shape, self.in_shape, True, "y")

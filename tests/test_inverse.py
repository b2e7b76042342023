"""companion.inverse: forward operators, their adjoints, SVD facts and validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from companion.inverse import (MatrixOperator, dct_block, dct_matrix, gaussian_cs, ill_conditioned_dct_block,
                               with_condition_number)


def test_dct_matrix_matches_scipy_orthonormal_dct() -> None:
    x = np.random.default_rng(0).normal(size=16)
    np.testing.assert_allclose(dct_matrix(16).numpy() @ x, scipy.fft.dct(x, type=2, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(dct_matrix(16).numpy() @ dct_matrix(16).numpy().T, np.eye(16), atol=1e-12)


def test_gaussian_cs_shapes_scaling_and_adjoint() -> None:
    op = gaussian_cs(196, (1, 28, 28), seed=0)
    x = torch.rand(5, 1, 28, 28)
    y = op.A(x)
    assert y.shape == (5, 196) and op.A_adjoint(y).shape == x.shape
    assert op.adjointness_error() < 1e-5
    # N(0, 1/m) entries: E‖Ax‖² = ‖x‖², so the ratio is close to 1 on average
    ratio = (y.norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
    assert 0.8 < float(ratio) < 1.2
    assert 2 < op.condition_number() < 4          # (1 + √(m/n)) / (1 − √(m/n)) = 3 asymptotically


class _ScaledAdjoint(MatrixOperator):
    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return 1.1 * super().A_adjoint(y)             # a forgotten (or extra) constant factor


class _UntransposedAdjoint(MatrixOperator):
    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.matrix.T).reshape(len(y), *self.in_shape)   # A y instead of Aᵀ y (square A)


def test_adjointness_error_detects_a_wrong_adjoint() -> None:
    """The check itself: ~1e-16 for the true adjoint, and the exact size of the error for a wrong one."""
    W = torch.rand(12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert not torch.allclose(W, W.T)
    assert MatrixOperator(W).adjointness_error() < 1e-14
    # A_adjoint = 1.1 Aᵀ: |⟨Ax, y⟩ − 1.1 ⟨x, Aᵀy⟩| / (‖Ax‖ ‖y‖) = 0.1 cos(Ax, y) on the check's own inputs
    # (the same generator, seed and order of draws as adjointness_error)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 12, generator=gen, dtype=torch.float64), torch.rand(4, 12, generator=gen, dtype=torch.float64)
    ax = x @ W.T
    cos = float((ax * y).sum() / (ax.norm() * y.norm()))
    assert cos > 0.5                                    # non-negative A, x, y: the error cannot hide
    assert _ScaledAdjoint(W).adjointness_error() == pytest.approx(0.1 * cos, rel=1e-10)
    assert _UntransposedAdjoint(W).adjointness_error() > 1e-3
    # the same matrix without the mistake when A is symmetric: the check cannot (and need not) tell
    assert _UntransposedAdjoint(W + W.T).adjointness_error() < 1e-14


def test_pseudo_inverse_recovers_images_in_the_row_space() -> None:
    op = gaussian_cs(30, (50,), seed=1)
    x = op.A_adjoint(torch.randn(4, 30))          # lies in the row space of A
    torch.testing.assert_close(op.A_dagger(op.A(x)), x, atol=1e-4, rtol=1e-4)


def test_with_condition_number_keeps_singular_vectors() -> None:
    op = gaussian_cs(40, (100,), seed=2)
    ill = with_condition_number(op, 100.0)
    assert math.isclose(ill.condition_number(), 100.0, rel_tol=1e-3)
    u, _, vt = op.svd()
    u2, _, vt2 = ill.svd()
    assert torch.allclose((u * u2).sum(0).abs(), torch.ones(40), atol=1e-3)
    assert torch.allclose((vt * vt2).sum(1).abs(), torch.ones(40), atol=1e-3)


def test_ill_conditioned_dct_block_is_reproducible_and_in_range() -> None:
    op, seed = ill_conditioned_dct_block(20, 64, cond_range=(50, 1000))
    again, seed2 = ill_conditioned_dct_block(20, 64, cond_range=(50, 1000))
    assert seed == seed2 and torch.equal(op.matrix, again.matrix)
    assert 50 <= op.condition_number() <= 1000
    with pytest.raises(ValueError, match="no 20x20 block"):
        ill_conditioned_dct_block(20, 64, cond_range=(1e9, 1e10), max_tries=3)


def test_rank_deficient_operator_has_infinite_condition_number() -> None:
    m = torch.randn(5, 3) @ torch.randn(3, 8)
    assert MatrixOperator(m).condition_number() == math.inf


def test_operator_validation_errors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        MatrixOperator(torch.randn(3))
    with pytest.raises(ValueError, match="in_shape"):
        MatrixOperator(torch.randn(3, 10), (1, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        MatrixOperator(torch.tensor([[float("nan"), 1.0]]))
    op = gaussian_cs(10, (1, 4, 4))
    with pytest.raises(ValueError, match="expected inputs of shape"):
        op.A(torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="expected measurements"):
        op.A_adjoint(torch.rand(2, 11))
    with pytest.raises(ValueError, match=">= 1"):
        with_condition_number(op, 0.5)
    with pytest.raises(ValueError, match="rows and cols"):
        dct_block(8, [0, 9], [1])


def test_rank_deficient_operator_cannot_be_reconditioned() -> None:
    with pytest.raises(ValueError, match="rank-deficient"):
        with_condition_number(MatrixOperator(torch.randn(5, 3) @ torch.randn(3, 8)), 10.0)
    with pytest.raises(ValueError, match="in_shape"):
        gaussian_cs(5, (0, 3))

"""Average-linkage agglomerative clustering (AHC) on a precomputed distance, the estimator base, and the
building blocks shared by every method of this part.

Every method of this part builds an ``(N, N)`` distance matrix and cuts one average-linkage dendrogram:
at a distance threshold eta (clusters merge while their average distance is at most eta) or at a
requested number of clusters. The dendrogram is kept (``linkage_``) so that a threshold sweep costs
one cut per threshold, not one clustering per threshold.

Shared building blocks: :func:`cosine_distances` (the baseline distance, the one cosine distance of the
package), :func:`gram_blocks` (the cosine similarities in row chunks, for neighbour lists and
neighbourhoods), :func:`neighbour_lists` (each point's nearest points: PAHC's NNList, ARO's lists),
:func:`set_similarity` (the symmetric set score ``(A + A^T) / 2`` of PAHC and DDC),
:func:`similarity_distance` (the decreasing map from that score to a distance, :data:`DISTANCES`) and
:func:`fit_quietly` (an SVM fit that reports, instead of printing, a convergence warning).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_array

from .._validate import check_choice, check_int, check_positive


def check_embeddings(X: Any, name: str = "X", *, min_samples: int = 2) -> np.ndarray:
    """Validate features ``(N, d)`` (finite, non-zero rows, N >= ``min_samples``); return them L2-normalised.

    Both chapters work on the unit hypersphere (the g of the pipeline x = g(f(I))), so the rows are
    normalised here, once, for every estimator.
    """
    if isinstance(X, (str, bytes)) or X is None:
        raise TypeError(f"{name} must be an array of shape (n_samples, n_features), got {type(X).__name__}")
    arr = check_array(X, dtype=np.float64, ensure_min_samples=min_samples, input_name=name)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has {int((norms == 0).sum())} all-zero row(s); they have no direction on the sphere")
    return arr / norms


def cosine_distances(X: Any, *, normalised: bool = False) -> np.ndarray:
    """``D_ij = 1 - x_i^T x_j`` ``(N, N)`` of the L2-normalised rows of ``X``, clipped to [0, 2], zero diagonal.

    The rows are validated and normalised by :func:`check_embeddings`, unless ``normalised`` says that
    ``X`` comes from it already (the estimators, which normalise once in ``fit``).
    """
    Xn = np.asarray(X) if normalised else check_embeddings(X)
    D = np.clip(1.0 - Xn @ Xn.T, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    return D


def gram_blocks(X: np.ndarray, chunk: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, X[start:start + chunk] @ X.T)``: the cosine similarities of unit-norm ``X`` in row chunks.

    O(N^2 d) time in total and O(chunk N) memory at a time; each block is a fresh array that the
    caller may modify (e.g. to overwrite the self-similarities on its diagonal ``[r, start + r]``).
    """
    check_int(chunk, "chunk")
    for start in range(0, len(X), chunk):
        yield start, X[start:start + chunk] @ X.T


def rank_block(G: np.ndarray, start: int, n_ranks: int) -> np.ndarray:
    """The first ``n_ranks`` NNList entries ``(len(G), n_ranks)`` of the rows of a Gram block from :func:`gram_blocks`.

    The point's own similarity is set to +inf (in place) so that ties cannot move it from rank 1.
    """
    rows = np.arange(len(G))
    G[rows, start + rows] = np.inf
    if n_ranks >= G.shape[1]:
        return np.argsort(-G, axis=1, kind="stable")
    part = np.argpartition(-G, n_ranks - 1, axis=1)[:, :n_ranks]
    order = np.argsort(-np.take_along_axis(G, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def neighbour_lists(X: np.ndarray, n_ranks: int, *, chunk: int = 1024) -> np.ndarray:
    """The first ``n_ranks`` entries of every point's NNList ``(N, n_ranks)``, by decreasing cosine similarity.

    Column 0 is the point itself (its similarity is set to +inf before ranking, so ties cannot move it).
    Computed in row chunks with ``argpartition``: O(N^2 d) time, O(chunk N) extra memory.
    """
    n = len(X)
    check_int(n_ranks, "n_ranks")
    if n_ranks > n:
        raise ValueError(f"n_ranks = {n_ranks} exceeds the number of points {n}")
    return np.concatenate([rank_block(G, start, n_ranks) for start, G in gram_blocks(X, chunk)])


def set_similarity(W: np.ndarray, M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The symmetric set score ``S = (A + A^T) / 2`` with ``A = W M^T + b 1^T``, ``(N, N)``.

    Row ``i`` of ``(W, b)`` is point i's linear evaluation function (PAHC: its SVM hyperplane; DDC: its
    SVDD or SVM), row ``j`` of ``M`` the mean of point j's neighbourhood. Because the evaluation is
    linear, ``A[i, j] = w_i^T mean(V_j) + b_i`` is the average of function i over neighbourhood j, and
    ``S[i, j]`` averages the two views (eq. 2.5 of PAHC, eq. 3.12 of DDC) with one matrix product.
    """
    A = W @ M.T + np.asarray(b)[:, None]
    return (A + A.T) / 2


DISTANCES = ("arctan", "exp")


def similarity_distance(S: np.ndarray, kind: str = "arctan") -> np.ndarray:
    """Distance from a set similarity ``S`` (PAHC's s_PA, DDC's density-aware score), one of :data:`DISTANCES`.

    ``"arctan"``: 1 - (2/pi) arctan(s) in (0, 2) (PAHC's eq. 2.6); ``"exp"``: exp(-s); zero diagonal.
    Both equal 1 at s = 0, where the neighbourhoods sit on each other's boundaries.
    """
    check_choice(kind, "distance", DISTANCES)
    D = 1.0 - (2.0 / np.pi) * np.arctan(S) if kind == "arctan" else np.exp(-S)
    D = np.array(D, dtype=np.float64)
    np.fill_diagonal(D, 0.0)
    return D


def fit_quietly(estimator: Any, X: np.ndarray, y: np.ndarray) -> bool:
    """``estimator.fit(X, y)`` with scikit-learn's ``ConvergenceWarning`` caught; return whether it converged.

    One SVM per point would otherwise print thousands of warnings; PAHC counts the unconverged fits instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X, y)
    return not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def average_linkage(D: np.ndarray) -> np.ndarray:
    """The average-linkage dendrogram of a symmetric ``(N, N)`` distance matrix (SciPy linkage format)."""
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] < 2:
        raise ValueError(f"D must be a square (N, N) matrix with N >= 2, got shape {D.shape}")
    if not np.isfinite(D).all():
        raise ValueError("D contains NaN or infinite values")
    if not np.allclose(D, D.T, atol=1e-9):
        raise ValueError("D must be symmetric")
    return linkage(squareform(D, checks=False), method="average")


def cut_linkage(Z: np.ndarray, threshold: float | None = None, n_clusters: int | None = None) -> np.ndarray:
    """Labels ``(N,)`` (0..k-1) from a dendrogram cut at distance ``threshold`` or into ``n_clusters`` clusters."""
    if (threshold is None) == (n_clusters is None):
        raise ValueError("give exactly one of threshold and n_clusters")
    if threshold is not None:
        labels = fcluster(Z, t=float(threshold), criterion="distance")
    else:
        check_int(n_clusters, "n_clusters")
        if n_clusters > len(Z) + 1:
            raise ValueError(f"n_clusters = {n_clusters} exceeds the number of samples {len(Z) + 1}")
        labels = fcluster(Z, t=n_clusters, criterion="maxclust")
    return np.unique(labels, return_inverse=True)[1]


class LinkageClustering(ClusterMixin, BaseEstimator):
    """Base of the estimators that cut an average-linkage dendrogram of their own distance.

    Subclasses implement ``_distances(X) -> (N, N)`` for unit-norm ``X``. ``fit`` sets
    ``linkage_``, ``labels_``, ``n_clusters_`` and ``n_features_in_``; :meth:`cut` relabels at
    another threshold (or number of clusters) without refitting.
    """

    threshold: float | None
    n_clusters: int | None

    def _distances(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_cut(self) -> None:
        if self.threshold is not None and self.n_clusters is not None:
            raise ValueError("give either threshold or n_clusters, not both")
        if self.threshold is not None:
            check_positive(self.threshold, "threshold", allow_zero=True)
        if self.n_clusters is not None:
            check_int(self.n_clusters, "n_clusters")

    def fit(self, X: Any, y: Any = None) -> "LinkageClustering":
        """Cluster features ``X`` ``(N, d)``; ``y`` is ignored (unsupervised)."""
        self._check_cut()
        self._check_params()
        Xn = check_embeddings(X)
        self.n_features_in_ = Xn.shape[1]
        D = self._distances(Xn)
        self.linkage_ = average_linkage(D)
        self.labels_ = self.cut(self.threshold, self.n_clusters)
        self.n_clusters_ = int(self.labels_.max()) + 1
        return self

    def _check_params(self) -> None:
        """Validate the method's own parameters (subclasses extend)."""

    def cut(self, threshold: float | None = None, n_clusters: int | None = None) -> np.ndarray:
        """Labels at another ``threshold`` or ``n_clusters`` (defaults: the estimator's ``default_threshold``)."""
        if not hasattr(self, "linkage_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        if threshold is None and n_clusters is None:
            threshold = self.default_threshold
        return cut_linkage(self.linkage_, threshold, n_clusters)

    default_threshold = 1.0


class CosineAHC(LinkageClustering):
    """The baseline: average-linkage AHC on the cosine distance D_ij = 1 - x_i^T x_j, cut at ``threshold``.

    With neither ``threshold`` nor ``n_clusters`` set, the cut is at 0.5.
    """

    default_threshold = 0.5

    def __init__(self, threshold: float | None = None, n_clusters: int | None = None) -> None:
        self.threshold = threshold
        self.n_clusters = n_clusters

    def _distances(self, X: np.ndarray) -> np.ndarray:
        return cosine_distances(X, normalised=True)

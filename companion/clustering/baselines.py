"""The baselines run beside PAHC and DDC, on unit-norm features.

k-means, DBSCAN, HDBSCAN, spectral clustering and affinity propagation come from scikit-learn, and
SSC-OMP (sparse subspace clustering by orthogonal matching pursuit) is built from its parts; each
function returns labels ``(N,)``, density methods' noise points (label -1) becoming singleton clusters,
since every image must be assigned an identity. Methods with a knob are swept with
:func:`companion.clustering.metrics.sweep`.

Approximate Rank-Order clustering (ARO, Otto, Wang and Jain 2018), a baseline of both chapters' tables,
is built here: :func:`rank_order_distances` and the estimator :class:`ApproximateRankOrder`, which cuts an
average-linkage dendrogram of that distance (the source's "distance measure of ARO followed by an AHC").
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import DBSCAN, HDBSCAN, AffinityPropagation, KMeans, SpectralClustering

from .._validate import check_int, check_positive
from .linkage import LinkageClustering, check_embeddings, neighbour_lists


def noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    """Relabel every noise point (-1) as its own cluster; labels become 0..k-1."""
    out = np.asarray(labels).copy()
    noise = out < 0
    out[noise] = out.max(initial=-1) + 1 + np.arange(noise.sum())
    return np.unique(out, return_inverse=True)[1]


def kmeans_labels(X: Any, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means with the true k (an oracle reference): k-means++ init, one replicate, 100 iterations."""
    check_int(n_clusters, "n_clusters")
    return KMeans(n_clusters=n_clusters, n_init=1, max_iter=100, random_state=seed).fit_predict(check_embeddings(X))


def dbscan_labels(D: np.ndarray, eps: float, min_samples: int = 2) -> np.ndarray:
    """DBSCAN on a precomputed distance; ``eps`` is the operating-point knob."""
    check_positive(eps, "eps")
    return noise_to_singletons(DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(D))


def hdbscan_labels(D: np.ndarray, min_cluster_size: int, min_samples: int = 1) -> np.ndarray:
    """HDBSCAN on a precomputed distance (not in the paper); ``min_cluster_size`` is the knob."""
    check_int(min_cluster_size, "min_cluster_size", minimum=2)
    est = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed", copy=True)
    return noise_to_singletons(est.fit_predict(D))


def spectral_labels(X: Any, n_clusters: int, n_neighbors: int = 10, seed: int = 0) -> np.ndarray:
    """Spectral clustering of the k-NN graph with the true number of clusters (not in the paper)."""
    check_int(n_clusters, "n_clusters")
    est = SpectralClustering(n_clusters=n_clusters, affinity="nearest_neighbors", n_neighbors=n_neighbors,
                             assign_labels="cluster_qr", random_state=seed)
    return est.fit_predict(check_embeddings(X))


def affinity_propagation_labels(X: Any, preference: float, seed: int = 0) -> np.ndarray:
    """Affinity propagation on cosine similarity; ``preference`` (self-similarity) is the knob."""
    Xn = check_embeddings(X)
    est = AffinityPropagation(affinity="precomputed", preference=preference, damping=0.9, max_iter=300,
                              random_state=seed)
    return est.fit_predict(Xn @ Xn.T)


def ssc_omp_labels(X: Any, n_clusters: int, n_nonzero: int = 10, seed: int = 0) -> np.ndarray:
    """Sparse subspace clustering by orthogonal matching pursuit (SSC-OMP, You, Robinson and Vidal 2016).

    Each unit-norm point x_j ``(d,)`` is written as a sparse combination of the *other* points by OMP
    (at most ``n_nonzero`` atoms; scikit-learn's :class:`~sklearn.linear_model.OrthogonalMatchingPursuit`),
    giving a coefficient matrix C ``(N, N)`` with zero diagonal; spectral clustering of the affinity
    ``|C| + |C|^T`` into ``n_clusters`` (the true number: SSC needs it) gives the labels ``(N,)``.
    One OMP per point: O(N^2 d n_nonzero) time, so the chapters run it at small N only.
    """
    from sklearn.linear_model import OrthogonalMatchingPursuit

    Xn = check_embeddings(X)
    n = len(Xn)
    check_int(n_clusters, "n_clusters")
    k = check_int(n_nonzero, "n_nonzero")
    if k > min(n - 1, Xn.shape[1]):
        raise ValueError(f"n_nonzero = {k} must not exceed min(N - 1, d) = {min(n - 1, Xn.shape[1])}")
    coef = np.zeros((n, n))
    omp = OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False)
    others = np.ones(n, dtype=bool)
    for j in range(n):
        others[j] = False
        omp.fit(Xn[others].T, Xn[j])          # dictionary (d, N - 1), target x_j
        coef[j, others] = omp.coef_
        others[j] = True
    affinity = np.abs(coef) + np.abs(coef).T
    est = SpectralClustering(n_clusters=n_clusters, affinity="precomputed", assign_labels="cluster_qr",
                             random_state=seed)
    return est.fit_predict(affinity)


def _prefix_misses(L: np.ndarray, member: np.ndarray, chunk: int = 128) -> np.ndarray:
    """``out[a, r]``: how many of a's list entries at positions 1..r are not in the list of ``b = L[a, r]``."""
    n, k = L.shape
    out = np.empty((n, k))
    lower = np.tril(np.ones((k, k), dtype=bool))          # position i <= r
    lower[:, 0] = False                                    # position 0 is a itself: not counted
    for s in range(0, n, chunk):
        Lc = L[s:s + chunk]
        # hit[c, r, i]: entry i of a's list is in the list of L[a, r]
        hit = member[Lc[:, :, None], Lc[:, None, :]]
        out[s:s + chunk] = (~hit & lower).sum(axis=2)
    return out


def rank_order_distances(X: Any, n_neighbors: int = 200) -> np.ndarray:
    """The approximate rank-order distance ``(N, N)`` of Otto, Wang and Jain (2018) on unit-norm ``X``.

    Each point's list holds its ``n_neighbors`` = k nearest points by cosine similarity, the point itself
    at position 0; ``O_a(b)`` is the position of b in a's list, or k when b is not in it. With
    ``d(a, b)`` the number of entries at positions 1..min(O_a(b), k - 1) of a's list that are absent from
    b's list (only presence counts, not the rank there),

        D(a, b) = [d(a, b) + d(b, a)] / min(O_a(b), O_b(a)),

    computed for every pair in which one point is in the other's list. Other pairs are not linked;
    they get the largest value D can take, k, so that average linkage treats them as far apart.
    Zero diagonal; symmetric. O(N k^2) time for the counts and O(N^2) memory.
    """
    Xn = check_embeddings(X)
    n = len(Xn)
    k = check_int(n_neighbors, "n_neighbors", minimum=2)
    if k > n:
        raise ValueError(f"n_neighbors = {k} exceeds the number of points N = {n}")
    L = neighbour_lists(Xn, k)
    rows = np.repeat(np.arange(n), k)
    member = np.zeros((n, n), dtype=bool)
    member[rows, L.ravel()] = True                         # member[a, j]: j is in a's list
    rank = np.full((n, n), k, dtype=np.int64)
    rank[rows, L.ravel()] = np.tile(np.arange(k), n)      # rank[a, b] = O_a(b)
    d = np.full((n, n), np.nan)                            # d[a, b] = d(a, b) where computed
    d[rows, L.ravel()] = _prefix_misses(L, member).ravel()
    # d(a, b) for b absent from a's list: all of a's entries 1..k-1 count, less those in b's list
    # (shared[a, b] entries are common to both lists; a itself, entry 0, is among them when a is in b's list)
    shared = member.astype(np.float64) @ member.T.astype(np.float64)
    full = (k - 1) - (shared - member.T)
    d = np.where(np.isnan(d), full, d)
    linked = member | member.T
    D = np.full((n, n), float(k))
    denom = np.minimum(rank, rank.T)
    D[linked] = ((d + d.T) / np.maximum(denom, 1))[linked]
    np.fill_diagonal(D, 0.0)
    return D


class ApproximateRankOrder(LinkageClustering):
    """Approximate Rank-Order clustering (ARO; Otto, Wang and Jain 2018) as a scikit-learn estimator.

    The rank-order distance of :func:`rank_order_distances` over each point's ``n_neighbors`` nearest
    points, then average-linkage AHC cut at ``threshold`` (default 1.0) or into ``n_clusters``, as the
    PAHC and DDC source runs it ("the distance measure of ARO followed by an AHC"). Otto et al. merge
    the linked pairs below the threshold transitively instead. ``fit`` sets ``labels_``, ``linkage_``
    and ``distances_`` ``(N, N)``.
    """

    def __init__(self, n_neighbors: int = 200, threshold: float | None = None,
                 n_clusters: int | None = None) -> None:
        self.n_neighbors = n_neighbors
        self.threshold = threshold
        self.n_clusters = n_clusters

    def _check_params(self) -> None:
        check_int(self.n_neighbors, "n_neighbors", minimum=2)

    def _distances(self, X: np.ndarray) -> np.ndarray:
        self.distances_ = rank_order_distances(X, self.n_neighbors)
        return self.distances_

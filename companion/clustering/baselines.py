"""The baselines run beside PAHC and DDC (all from scikit-learn), on unit-norm features.

Each returns labels ``(N,)``; density methods' noise points (label -1) become singleton clusters,
since every image must be assigned an identity. Methods with a knob are swept with
:func:`companion.clustering.metrics.sweep`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import DBSCAN, HDBSCAN, AffinityPropagation, KMeans, SpectralClustering

from .._validate import check_int, check_positive
from .linkage import check_embeddings


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

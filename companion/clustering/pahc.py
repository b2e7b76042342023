"""Proximity-aware hierarchical clustering (PAHC, Lin et al. 2017; seed 000, chapter 2).

For each point x_i a linear SVM separates its K nearest neighbours V_K(x_i) (x_i included) from the
far points of its neighbour list (ranks K' onward). The asymmetric score of a set S on the hyperplane
(w_i, b_i) is ``H_i(S) = (1/|S|) sum_{x in S} (w_i^T x + b_i) = w_i^T mean(S) + b_i``, and

    s_PA(x_i, x_j) = [H_i(V_K(x_j)) + H_j(V_K(x_i))] / 2,        (eq. 2.5)

i.e. S = (A + A^T) / 2 with A = W M^T + b 1^T, one matrix product (M stacks the neighbourhood means).
The distance is 1 - (2/pi) arctan(s_PA) (eq. 2.6) or exp(-s_PA) (:func:`~companion.clustering.linkage.similarity_distance`,
shared with DDC); average-linkage AHC cuts it.

:class:`AdaptivePAHC` replaces the fixed K and K' by the distance-based sets of the source's IJB-B
study (sec. 2.5.4).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from .._validate import check_choice, check_int, check_positive
from .linkage import (DISTANCES, LinkageClustering, check_embeddings, fit_quietly, gram_blocks, rank_block,
                      set_similarity, similarity_distance)


def _svm(Xi: np.ndarray, n_pos: int, C: float, tol: float) -> tuple[np.ndarray, float, bool]:
    """Eq. 2.7: class-weighted L2-regularised squared-hinge linear SVM, primal, bias regularised."""
    n_neg = len(Xi) - n_pos
    y = np.r_[np.ones(n_pos), -np.ones(n_neg)]
    total = n_pos + n_neg
    svc = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=False, fit_intercept=True, intercept_scaling=1.0,
                    class_weight={1.0: total / n_pos, -1.0: total / n_neg}, tol=tol, max_iter=1000)
    converged = fit_quietly(svc, Xi, y)
    return svc.coef_[0], float(svc.intercept_[0]), converged


def pahc_hyperplanes(X: np.ndarray, n_neighbors: int = 5, neg_start: int = 200, max_neg: int | None = None,
                     C: float = 10.0, tol: float = 1e-4, progress: bool = False) -> dict[str, np.ndarray]:
    """Per-point hyperplanes (eq. 2.7) for unit-norm ``X`` ``(N, d)``.

    Positives: NNList(x_i)[1:K] (``n_neighbors`` = K, x_i included). Negatives: NNList(x_i)[K':N]
    (``neg_start`` = K', 1-based ranks as in the paper), or only its first ``max_neg`` entries (the
    hardest far points) when ``max_neg`` is set. Returns ``W`` ``(N, d)``, ``b`` ``(N,)``, the
    neighbourhood means ``M`` ``(N, d)`` and ``converged`` ``(N,)`` bool.
    """
    n, d = X.shape
    K = check_int(n_neighbors, "n_neighbors")
    Kp = check_int(neg_start, "neg_start", minimum=2)
    if max_neg is not None:
        check_int(max_neg, "max_neg")
    check_positive(C, "C")
    if Kp <= K:
        raise ValueError(f"neg_start (K' = {Kp}) must exceed n_neighbors (K = {K}): negatives start after the positives")
    if Kp > n:
        raise ValueError(f"neg_start (K' = {Kp}) exceeds the number of points N = {n}: no negatives are left; "
                         f"lower neg_start (about 2-3x the largest expected cluster)")
    n_ranks = n if max_neg is None else min(n, Kp - 1 + max_neg)
    W, b = np.empty((n, d)), np.empty(n)
    M = np.empty((n, d))
    converged = np.ones(n, dtype=bool)
    for start, G in tqdm(gram_blocks(X, 1024), desc="PAHC: one SVM per point", disable=not progress,
                         total=-(-n // 1024), unit="x1024"):
        for r, order in enumerate(rank_block(G, start, n_ranks)):   # NNList(x_i), truncated when max_neg is set
            i = start + r
            pos, neg = order[:K], order[Kp - 1:]
            M[i] = X[pos].mean(axis=0)
            W[i], b[i], converged[i] = _svm(X[np.r_[pos, neg]], K, C, tol)
    return {"W": W, "b": b, "M": M, "converged": converged}


def pahc_similarity(X: np.ndarray, n_neighbors: int = 5, neg_start: int = 200, max_neg: int | None = None,
                    C: float = 10.0, progress: bool = False) -> np.ndarray:
    """The proximity-aware similarity s_PA ``(N, N)`` of eq. 2.5 for features ``X`` ``(N, d)`` (normalised here)."""
    Xn = check_embeddings(X)
    h = pahc_hyperplanes(Xn, n_neighbors, neg_start, max_neg, C, progress=progress)
    return set_similarity(h["W"], h["M"], h["b"])      # A[i, j] = H_i(V_K(x_j)), S = (A + A^T) / 2


def adaptive_radii(X: Any, y: Any, pos_quantile: float = 0.5, neg_quantile: float = 0.01) -> tuple[float, float]:
    """Radii ``(r_pos, r_neg)`` for :class:`AdaptivePAHC` from labelled development features ``X`` ``(N, d)``, ``y``.

    The source read its radii (0.2 and 0.25) off identities it had labels for. Here ``r_pos`` is the
    ``pos_quantile`` of the cosine distances of same-identity pairs (with 0.5: half of the matched pairs
    lie within it) and ``r_neg`` the ``neg_quantile`` of the distances of different-identity pairs
    (with 0.01: 99 % of the mismatched pairs lie beyond it), raised to ``r_pos`` if it is smaller.
    """
    Xn = check_embeddings(X)
    labels = np.asarray(y)
    if labels.shape != (len(Xn),):
        raise ValueError(f"y must have shape ({len(Xn)},), got {labels.shape}")
    for q, name in ((pos_quantile, "pos_quantile"), (neg_quantile, "neg_quantile")):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {q}")
    iu = np.triu_indices(len(Xn), 1)
    dist = (1.0 - Xn @ Xn.T)[iu]
    same = (labels[:, None] == labels[None, :])[iu]
    if same.all() or not same.any():
        raise ValueError("y must hold at least one same-identity pair and one different-identity pair")
    r_pos = float(np.quantile(dist[same], pos_quantile))
    return r_pos, max(r_pos, float(np.quantile(dist[~same], neg_quantile)))


def adaptive_sets(G: np.ndarray, i: int, r_pos: float, r_neg: float, n_neg: int,
                  pos_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative indices of point ``i`` from its row ``G`` ``(N,)`` of cosine similarities (sec. 2.5.4).

    Positives: the nearest ``ceil(pos_fraction * m)`` of the m points within cosine distance ``r_pos``
    (the point itself, always first, included). Negatives: the ``n_neg`` nearest points beyond ``r_neg``
    (fewer if fewer lie there).
    """
    g = G.copy()
    g[i] = np.inf                                          # the point itself comes first
    within = np.flatnonzero(1.0 - g < r_pos)
    within = within[np.argsort(-g[within], kind="stable")]
    pos = within[:int(np.ceil(pos_fraction * len(within)))]
    beyond = np.flatnonzero(1.0 - g > r_neg)
    if beyond.size == 0:
        raise ValueError(f"no point lies beyond r_neg = {r_neg:.3g} of point {i}: lower r_neg")
    if beyond.size > n_neg:
        beyond = beyond[np.argpartition(-g[beyond], n_neg - 1)[:n_neg]]
    return pos, beyond[np.argsort(-g[beyond], kind="stable")]


def adaptive_hyperplanes(X: np.ndarray, r_pos: float, r_neg: float, n_neg: int = 100, pos_fraction: float = 0.5,
                         C: float = 10.0, tol: float = 1e-4) -> dict[str, np.ndarray]:
    """Per-point hyperplanes (eq. 2.7) with the adaptive sets of sec. 2.5.4 (:func:`adaptive_sets`), unit-norm ``X``.

    Returns ``W``, ``b``, ``M`` and ``converged`` as :func:`pahc_hyperplanes`, and ``n_pos`` ``(N,)``,
    the size of each positive set (1 for a point with no neighbour within ``r_pos``, like K = 1).
    """
    n, d = X.shape
    check_positive(r_pos, "r_pos")
    check_positive(r_neg, "r_neg")
    if r_neg < r_pos:
        raise ValueError(f"r_neg = {r_neg} must be at least r_pos = {r_pos}: negatives lie beyond the positives")
    check_int(n_neg, "n_neg")
    if not 0.0 < pos_fraction <= 1.0:
        raise ValueError(f"pos_fraction must lie in (0, 1], got {pos_fraction}")
    check_positive(C, "C")
    W, b, M = np.empty((n, d)), np.empty(n), np.empty((n, d))
    converged = np.ones(n, dtype=bool)
    n_pos = np.empty(n, dtype=int)
    for start, G in gram_blocks(X, 1024):
        for r, row in enumerate(G):
            i = start + r
            pos, neg = adaptive_sets(row, i, r_pos, r_neg, n_neg, pos_fraction)
            n_pos[i] = len(pos)
            M[i] = X[pos].mean(axis=0)
            W[i], b[i], converged[i] = _svm(X[np.r_[pos, neg]], len(pos), C, tol)
    return {"W": W, "b": b, "M": M, "converged": converged, "n_pos": n_pos}


class PAHC(LinkageClustering):
    """Proximity-aware hierarchical clustering (scikit-learn estimator).

    Parameters: ``n_neighbors`` K (positives, the point included), ``neg_start`` K' (negatives from
    rank K'), ``max_neg`` (keep only the first ``max_neg`` negatives; None = all, as in the paper),
    ``C`` (SVM, 10 in the paper), ``distance`` (``"arctan"`` or ``"exp"``), and the cut: ``threshold``
    eta or ``n_clusters`` (default: eta = 1, i.e. s_PA = 0). ``fit`` sets ``labels_``, ``linkage_``,
    ``similarity_`` ``(N, N)``, ``coef_`` ``(N, d)``, ``intercept_`` ``(N,)`` and ``n_unconverged_``.
    """

    def __init__(self, n_neighbors: int = 5, neg_start: int = 200, max_neg: int | None = None, C: float = 10.0,
                 distance: str = "arctan", threshold: float | None = None, n_clusters: int | None = None,
                 progress: bool = False) -> None:
        self.n_neighbors = n_neighbors
        self.neg_start = neg_start
        self.max_neg = max_neg
        self.C = C
        self.distance = distance
        self.threshold = threshold
        self.n_clusters = n_clusters
        self.progress = progress

    def _check_params(self) -> None:
        check_int(self.n_neighbors, "n_neighbors")
        check_int(self.neg_start, "neg_start", minimum=2)
        if self.max_neg is not None:
            check_int(self.max_neg, "max_neg")
        check_positive(self.C, "C")
        check_choice(self.distance, "distance", DISTANCES)

    def _distances(self, X: np.ndarray) -> np.ndarray:
        h = pahc_hyperplanes(X, self.n_neighbors, self.neg_start, self.max_neg, self.C, progress=self.progress)
        self.coef_, self.intercept_ = h["W"], h["b"]
        self.n_unconverged_ = int((~h["converged"]).sum())
        self.similarity_ = set_similarity(h["W"], h["M"], h["b"])     # (A + A^T) / 2, A[i, j] = H_i(V_K(x_j))
        return similarity_distance(self.similarity_, self.distance)


class AdaptivePAHC(LinkageClustering):
    """PAHC with the adaptive positive and negative sets of the source's IJB-B study (sec. 2.5.4).

    Instead of a fixed K and K', each point takes as positives the nearest half (``pos_fraction``) of
    the points within cosine distance ``r_pos`` and as negatives the ``n_neg`` nearest points beyond
    ``r_neg`` (source: 0.2, 0.25 and 100 for its ResNet features; :func:`adaptive_radii` reads radii
    off labelled development data). A singleton then gets K = 1 and a member of a large identity a
    larger positive set. Similarity, distance and cut as in :class:`PAHC`; ``fit`` also sets
    ``n_pos_`` ``(N,)``, the positive-set sizes.
    """

    def __init__(self, r_pos: float = 0.2, r_neg: float = 0.25, n_neg: int = 100, pos_fraction: float = 0.5,
                 C: float = 10.0, distance: str = "arctan", threshold: float | None = None,
                 n_clusters: int | None = None) -> None:
        self.r_pos = r_pos
        self.r_neg = r_neg
        self.n_neg = n_neg
        self.pos_fraction = pos_fraction
        self.C = C
        self.distance = distance
        self.threshold = threshold
        self.n_clusters = n_clusters

    def _check_params(self) -> None:
        check_positive(self.r_pos, "r_pos")
        check_positive(self.r_neg, "r_neg")
        check_int(self.n_neg, "n_neg")
        check_positive(self.C, "C")
        check_choice(self.distance, "distance", DISTANCES)

    def _distances(self, X: np.ndarray) -> np.ndarray:
        h = adaptive_hyperplanes(X, self.r_pos, self.r_neg, self.n_neg, self.pos_fraction, self.C)
        self.coef_, self.intercept_, self.n_pos_ = h["W"], h["b"], h["n_pos"]
        self.n_unconverged_ = int((~h["converged"]).sum())
        self.similarity_ = set_similarity(h["W"], h["M"], h["b"])
        return similarity_distance(self.similarity_, self.distance)

"""Proximity-aware hierarchical clustering (PAHC, Lin et al. 2017; seed 000, chapter 2).

For each point x_i a linear SVM separates its K nearest neighbours V_K(x_i) (x_i included) from the
far points of its neighbour list (ranks K' onward). The asymmetric score of a set S on the hyperplane
(w_i, b_i) is ``H_i(S) = (1/|S|) sum_{x in S} (w_i^T x + b_i) = w_i^T mean(S) + b_i``, and

    s_PA(x_i, x_j) = [H_i(V_K(x_j)) + H_j(V_K(x_i))] / 2,        (eq. 2.5)

i.e. S = (A + A^T) / 2 with A = W M^T + b 1^T, one matrix product (M stacks the neighbourhood means).
The distance is 1 - (2/pi) arctan(s_PA) (eq. 2.6) or exp(-s_PA) (:func:`~companion.clustering.linkage.similarity_distance`,
shared with DDC); average-linkage AHC cuts it.
"""
from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from .._validate import check_choice, check_int, check_positive
from .linkage import (DISTANCES, LinkageClustering, check_embeddings, fit_quietly, gram_blocks, set_similarity,
                      similarity_distance)


def _rank_block(G: np.ndarray, start: int, n_ranks: int) -> np.ndarray:
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
    return np.concatenate([_rank_block(G, start, n_ranks) for start, G in gram_blocks(X, chunk)])


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
        for r, order in enumerate(_rank_block(G, start, n_ranks)):   # NNList(x_i), truncated when max_neg is set
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

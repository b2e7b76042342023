"""Proximity-aware hierarchical clustering (PAHC, Lin et al. 2017; seed 000, chapter 2).

For each point x_i a linear SVM separates its K nearest neighbours V_K(x_i) (x_i included) from the
far points of its neighbour list (ranks K' onward). The asymmetric score of a set S on the hyperplane
(w_i, b_i) is H_i(S) = (1/|S|) sum_{x in S} (w_i^T x + b_i) = w_i^T mean(S) + b_i, and

    s_PA(x_i, x_j) = [H_i(V_K(x_j)) + H_j(V_K(x_i))] / 2,        (eq. 2.5)

i.e. S = (A + A^T) / 2 with A = W M^T + b 1^T, one matrix product (M stacks the neighbourhood means).
The distance is 1 - (2/pi) arctan(s_PA) (eq. 2.6) or exp(-s_PA); average-linkage AHC cuts it.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from .._validate import check_choice, check_int, check_positive
from .linkage import LinkageClustering, check_embeddings

DISTANCES = ("arctan", "exp")


def neighbour_lists(X: np.ndarray, n_ranks: int, *, chunk: int = 1024) -> np.ndarray:
    """The first ``n_ranks`` entries of every point's NNList ``(N, n_ranks)``, by decreasing cosine similarity.

    Column 0 is the point itself (its similarity is set to +inf before ranking, so ties cannot move it).
    Computed in row chunks with ``argpartition``: O(N^2 d) time, O(chunk N) extra memory.
    """
    n = len(X)
    check_int(n_ranks, "n_ranks")
    if n_ranks > n:
        raise ValueError(f"n_ranks = {n_ranks} exceeds the number of points {n}")
    out = np.empty((n, n_ranks), dtype=np.int64)
    for start in range(0, n, chunk):
        G = X[start:start + chunk] @ X.T
        rows = np.arange(len(G))
        G[rows, start + rows] = np.inf
        if n_ranks < n:
            part = np.argpartition(-G, n_ranks - 1, axis=1)[:, :n_ranks]
        else:
            part = np.tile(np.arange(n), (len(G), 1))
        order = np.argsort(-np.take_along_axis(G, part, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def _svm(Xi: np.ndarray, n_pos: int, C: float, tol: float) -> tuple[np.ndarray, float, bool]:
    """Eq. 2.7: class-weighted L2-regularised squared-hinge linear SVM, primal, bias regularised."""
    n_neg = len(Xi) - n_pos
    y = np.r_[np.ones(n_pos), -np.ones(n_neg)]
    total = n_pos + n_neg
    svc = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=False, fit_intercept=True, intercept_scaling=1.0,
                    class_weight={1.0: total / n_pos, -1.0: total / n_neg}, tol=tol, max_iter=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svc.fit(Xi, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
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
    nn = neighbour_lists(X, n_ranks) if max_neg is not None else None
    W, b = np.empty((n, d)), np.empty(n)
    M = np.empty((n, d))
    converged = np.ones(n, dtype=bool)
    for start in tqdm(range(0, n, 1024), desc="PAHC: one SVM per point", disable=not progress,
                      total=-(-n // 1024), unit="x1024"):
        stop = min(n, start + 1024)
        if nn is None:  # all negatives from rank K' on: rank the block's rows in full
            block = neighbour_lists_block(X, start, stop)
        else:
            block = nn[start:stop]
        for r, i in enumerate(range(start, stop)):
            order = block[r]
            pos, neg = order[:K], order[Kp - 1:]
            M[i] = X[pos].mean(axis=0)
            W[i], b[i], converged[i] = _svm(X[np.r_[pos, neg]], K, C, tol)
    return {"W": W, "b": b, "M": M, "converged": converged}


def neighbour_lists_block(X: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Full NNLists ``(stop - start, N)`` of rows ``start:stop`` (point itself first)."""
    G = X[start:stop] @ X.T
    rows = np.arange(stop - start)
    G[rows, start + rows] = np.inf
    return np.argsort(-G, axis=1, kind="stable")


def pahc_similarity(X: np.ndarray, n_neighbors: int = 5, neg_start: int = 200, max_neg: int | None = None,
                    C: float = 10.0, progress: bool = False) -> np.ndarray:
    """The proximity-aware similarity s_PA ``(N, N)`` of eq. 2.5 for features ``X`` ``(N, d)`` (normalised here)."""
    Xn = check_embeddings(X)
    h = pahc_hyperplanes(Xn, n_neighbors, neg_start, max_neg, C, progress=progress)
    A = h["W"] @ h["M"].T + h["b"][:, None]      # A[i, j] = H_i(V_K(x_j))
    return (A + A.T) / 2


def pahc_distance(S: np.ndarray, kind: str = "arctan") -> np.ndarray:
    """Distance from s_PA: ``"arctan"``: 1 - (2/pi) arctan(s) in (0, 2) (eq. 2.6); ``"exp"``: exp(-s).

    Both equal 1 at s = 0, where the neighbourhoods sit on each other's SVM boundaries.
    """
    check_choice(kind, "distance", DISTANCES)
    D = 1.0 - (2.0 / np.pi) * np.arctan(S) if kind == "arctan" else np.exp(-S)
    D = np.array(D, dtype=np.float64)
    np.fill_diagonal(D, 0.0)
    return D


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
        A = h["W"] @ h["M"].T + h["b"][:, None]
        self.similarity_ = (A + A.T) / 2
        return pahc_distance(self.similarity_, self.distance)

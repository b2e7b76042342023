"""Clustering metrics: BCubed and pairwise precision/recall/F, NMI, and threshold sweeps.

BCubed {Amigo et al. 2009}: for an item e with cluster C(e) and label L(e),
precision = Avg_e Avg_{e': C(e')=C(e)} [L(e')=L(e)], recall = Avg_e Avg_{e': L(e')=L(e)} [C(e')=C(e)]
(e' includes e). With n_kl the number of items of cluster k and label l:
P = (1/N) sum_kl n_kl^2 / n_k, R = (1/N) sum_kl n_kl^2 / n_l, O(N).
Pairwise: precision = same-label pairs among same-cluster pairs, recall = same-cluster pairs among
same-label pairs (unordered pairs of distinct items).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from .._validate import check_int
from .linkage import cut_linkage


def _check_labelings(labels_true: Any, labels_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"labels_true and labels_pred must have the same length, got {len(t)} and {len(p)}")
    if t.size == 0:
        raise ValueError("labels are empty")
    return t, p


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def bcubed(labels_true: Any, labels_pred: Any) -> tuple[float, float, float]:
    """BCubed (precision, recall, F) of a clustering ``labels_pred`` against identities ``labels_true``."""
    t, p = _check_labelings(labels_true, labels_pred)
    n = contingency_matrix(t, p, sparse=True).tocoo()          # rows: labels l, columns: clusters k
    size_l = np.bincount(n.row, weights=n.data)
    size_k = np.bincount(n.col, weights=n.data)
    sq = n.data.astype(np.float64) ** 2
    prec = float((sq / size_k[n.col]).sum() / t.size)
    rec = float((sq / size_l[n.row]).sum() / t.size)
    return prec, rec, _f(prec, rec)


def pairwise_prf(labels_true: Any, labels_pred: Any) -> tuple[float, float, float]:
    """Pairwise (precision, recall, F); a side with no pairs counts as 1 (nothing to get wrong)."""
    t, p = _check_labelings(labels_true, labels_pred)
    n = contingency_matrix(t, p, sparse=True)
    pairs = lambda c: float((c * (c - 1)).sum()) / 2  # noqa: E731
    tp = pairs(n.data.astype(np.float64))
    pred = pairs(np.asarray(n.sum(axis=0)).ravel().astype(np.float64))
    true = pairs(np.asarray(n.sum(axis=1)).ravel().astype(np.float64))
    prec = tp / pred if pred else 1.0
    rec = tp / true if true else 1.0
    return prec, rec, _f(prec, rec)


def nmi(labels_true: Any, labels_pred: Any) -> float:
    """Normalised mutual information (scikit-learn, arithmetic-mean normalisation)."""
    t, p = _check_labelings(labels_true, labels_pred)
    return float(normalized_mutual_info_score(t, p))


@dataclass
class Sweep:
    """BCubed precision/recall/F and number of clusters along an operating-point knob (a threshold)."""

    values: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f: np.ndarray
    n_clusters: np.ndarray

    @property
    def best(self) -> int:
        """Index of the oracle operating point (best F; uses the ground truth)."""
        return int(np.argmax(self.f))

    @property
    def best_f(self) -> float:
        return float(self.f[self.best])

    @property
    def best_value(self) -> float:
        return float(self.values[self.best])

    def precision_at_recall(self, r: float) -> float:
        """Best precision among operating points with recall >= ``r`` (0 when none reaches it)."""
        ok = self.recall >= r
        return float(self.precision[ok].max()) if ok.any() else 0.0


def sweep(labels_at: Callable[[float], np.ndarray], values: Sequence[float], labels_true: Any) -> Sweep:
    """Evaluate ``labels_at(v)`` for every knob value ``v`` (DBSCAN's eps, AP's preference, ...)."""
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        raise ValueError("values is empty")
    rows = []
    for v in vals:
        lab = labels_at(float(v))
        rows.append((*bcubed(labels_true, lab), len(np.unique(lab))))
    arr = np.array(rows)
    return Sweep(vals, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3].astype(int))


def linkage_sweep(Z: np.ndarray, labels_true: Any, n_cuts: int = 200, thresholds: Sequence[float] | None = None) -> Sweep:
    """Cut one dendrogram ``Z`` at many thresholds (default: ``n_cuts`` quantiles of its merge heights)."""
    if thresholds is None:
        check_int(n_cuts, "n_cuts", minimum=2)
        heights = Z[:, 2]
        thresholds = np.unique(np.concatenate([[0.0], np.quantile(heights, np.linspace(0, 1, n_cuts))]))
    return sweep(lambda t: cut_linkage(Z, threshold=t), thresholds, labels_true)


def fit_sweep(estimator: Any, X: Any, labels_true: Any, n_cuts: int = 200) -> tuple[Sweep, np.ndarray]:
    """Fit a linkage estimator (``linkage_`` and ``cut``), sweep its dendrogram; return the sweep and the oracle labels."""
    estimator.fit(X)
    sw = linkage_sweep(estimator.linkage_, labels_true, n_cuts)
    return sw, estimator.cut(threshold=sw.best_value)

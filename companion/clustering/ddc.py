"""Deep density clustering (DDC, Lin et al. 2018; seed 000, chapter 3).

1. epsilon-neighbourhoods V(x_m) = {x : 1 - x^T x_m <= eps} (x_m included), eps = the mode of the
   matched-pair cosine-distance density averaged over labelled training subjects (eq. 3.2);
2. each neighbourhood is encapsulated by SVDD (eq. 3.3); for unit-norm features and a linear kernel
   SVDD equals the one-class SVM (Lemma 1) and its evaluation function is linear on the sphere:
   E_m(x) = Rbar_m - ||x - c_m||^2 = 2 c_m^T x + (Rbar_m - 1 - ||c_m||^2)          (eq. 3.11);
3. density-aware similarity (eq. 3.12) s(x_i, x_j) = [avg_{z in V(x_j)} E_i(z) + avg_{z in V(x_i)} E_j(z)] / 2
   = (A + A^T)/2 with A = W M^T + o 1^T (W rows 2 c_m, M rows the neighbourhood means), one product;
4. average-linkage AHC on 1 - (2/pi) arctan(s) (the paper asks only for a decreasing map).

DDC-NEG (eq. 3.15) replaces SVDD by a linear SVM separating V(x) from hard negatives beyond eta.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import gaussian_kde
from sklearn.svm import SVC, OneClassSVM
from tqdm.auto import tqdm

from .._validate import check_choice, check_int, check_positive
from .linkage import (DISTANCES, LinkageClustering, check_embeddings, gram_blocks, set_similarity,
                      similarity_distance)


def _matched_distances(X: np.ndarray, labels: np.ndarray, max_per_subject: int = 2000,
                       rng: np.random.Generator | None = None) -> list[np.ndarray]:
    out = []
    rng = rng if rng is not None else np.random.default_rng(0)
    for c in np.unique(labels):
        Z = X[labels == c]
        if len(Z) < 3:
            continue
        d = (1 - Z @ Z.T)[np.triu_indices(len(Z), 1)]
        out.append(d if d.size <= max_per_subject else rng.choice(d, max_per_subject, replace=False))
    return out


def select_eps(X, labels, *, grid: int = 400) -> float:
    """Eq. 3.2: eps = argmax_d E_c[p(d | c)], the mode of the per-subject matched-distance densities.

    Each subject's density is a Gaussian KDE of its matched-pair cosine distances; the densities are
    averaged with equal weight per subject (subjects with fewer than 3 images are skipped).
    """
    Xn, lab = check_embeddings(X), np.asarray(labels)
    if lab.shape != (len(Xn),):
        raise ValueError(f"labels must have shape ({len(Xn)},), got {lab.shape}")
    per_subject = [d for d in _matched_distances(Xn, lab) if np.ptp(d) > 0]
    if not per_subject:
        raise ValueError("no subject has 3 or more images: cannot estimate the matched-pair distance density")
    top = max(float(d.max()) for d in per_subject)
    ds = np.linspace(0.0, top, grid)
    density = np.mean([gaussian_kde(d)(ds) for d in per_subject], axis=0)
    return float(ds[np.argmax(density)])


def select_eta(X, labels, *, grid: int = 400, max_pairs: int = 200_000, seed: int = 0) -> float:
    """Negative-mining threshold: the distance minimising FNR + FPR between matched and mismatched pairs.

    This is the Bayes threshold with equal priors and equal costs (the crossing of the two densities).
    """
    Xn, lab = check_embeddings(X), np.asarray(labels)
    if lab.shape != (len(Xn),):
        raise ValueError(f"labels must have shape ({len(Xn)},), got {lab.shape}")
    rng = np.random.default_rng(seed)
    i, j = rng.integers(len(Xn), size=(2, max_pairs))
    keep = i != j
    i, j = i[keep], j[keep]
    d = 1 - np.einsum("nd,nd->n", Xn[i], Xn[j])
    same = lab[i] == lab[j]
    if same.all() or not same.any():
        raise ValueError("need both matched and mismatched pairs to choose eta")
    ts = np.linspace(0, 2, grid)
    fnr = (d[same][None, :] > ts[:, None]).mean(1)
    fpr = (d[~same][None, :] <= ts[:, None]).mean(1)
    return float(ts[np.argmin(fnr + fpr)])


def _block_neighbourhoods(G: np.ndarray, start: int, eps: float) -> list[np.ndarray]:
    """V(x_m) for the rows of a Gram block from :func:`gram_blocks` (self-similarity set to 1 in place)."""
    rows = np.arange(len(G))
    G[rows, start + rows] = 1.0
    return [np.flatnonzero(1 - row <= eps) for row in G]


def eps_neighbourhoods(X: np.ndarray, eps: float) -> list[np.ndarray]:
    """Indices of V(x_m) = {x : 1 - x^T x_m <= eps} for every m (x_m always included), for unit-norm ``X``."""
    check_positive(eps, "eps")
    return [hood for start, G in gram_blocks(X) for hood in _block_neighbourhoods(G, start, eps)]


def svdd_linear(Z: np.ndarray, nu: float = 0.5) -> tuple[np.ndarray, float]:
    """SVDD of unit-norm points ``Z`` ``(n_V, d)`` (eq. 3.3), linear kernel: E(x) = a^T x + o for unit x.

    Solved as the equivalent one-class SVM (Lemma 1) with scikit-learn/libsvm, whose dual is scaled by
    nu n_V: E(x) = 2 decision_function(x) / (nu n_V) = 2 c^T x - 2 rho, c = sum_i alpha_i z_i. A single
    point gives c = z, Rbar = 0, E(x) = -||x - z||^2 = 2 z^T x - 2 (closed form).
    Returns ``(a, o)`` with ``a = 2 c`` ``(d,)``.
    """
    n = len(Z)
    if n == 1:
        return 2 * Z[0], -2.0
    if not 0 < nu <= 1:
        raise ValueError(f"nu must lie in (0, 1], got {nu}")
    oc = OneClassSVM(kernel="linear", nu=nu, tol=1e-6).fit(Z)
    scale = 2.0 / (nu * n)
    return scale * oc.coef_[0], scale * float(oc.intercept_[0])


def svdd_dual(Z: np.ndarray, nu: float = 0.5) -> np.ndarray:
    """The normalised dual coefficients alpha ``(n_V,)`` of eq. 3.3 (sum 1, 0 <= alpha <= 1/(nu n_V))."""
    n = len(Z)
    oc = OneClassSVM(kernel="linear", nu=nu, tol=1e-8).fit(Z)
    alpha = np.zeros(n)
    alpha[oc.support_] = oc.dual_coef_[0] / (nu * n)
    return alpha


def _neg_svm(Zp: np.ndarray, Zn: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Eq. 3.15 (Delta = 1): hinge-loss linear SVM, V(x) ``Zp`` vs negatives ``Zn``, unregularised bias rho.

    Solved exactly by libsvm's SMO (:class:`~sklearn.svm.SVC`, linear kernel), whose bias is not
    regularised, as in eq. 3.15. (An earlier version used LIBLINEAR with an intercept scaled by 10 to
    approximate that; its dual coordinate descent stopped at the 5,000-pass limit on most
    neighbourhoods of the face-like population, unconverged, and took about ten times longer.)
    Returns ``(w, -rho)``: E(x) = w^T x - rho.
    """
    y = np.r_[np.ones(len(Zp)), -np.ones(len(Zn))]
    svc = SVC(kernel="linear", C=C, tol=1e-4).fit(np.r_[Zp, Zn], y)
    return svc.coef_[0], float(svc.intercept_[0])


NEG_CHOICES = ("nearest", "random")


def ddc_evaluators(X: np.ndarray, eps: float, nu: float = 0.5, negatives: bool = False, neg_eta: float = 0.4,
                   n_neg: int = 100, C: float = 1.0, progress: bool = False, neg_choice: str = "nearest",
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Linear evaluation functions E_m(x) = W[m] x + o[m] and neighbourhood means M for unit-norm ``X`` ``(N, d)``.

    ``negatives=False``: SVDD per eps-neighbourhood (DDC). ``negatives=True``: linear SVM against
    ``n_neg`` points farther than ``neg_eta`` (DDC-NEG; SVDD where no negative exists), the nearest of
    them (``neg_choice="nearest"``, the hardest) or a uniform sample of them (``"random"``, the source's
    "sampled from"; generator seeded by ``seed``, so a fit is reproducible).
    Returns ``W`` ``(N, d)``, ``o`` ``(N,)``, ``M`` ``(N, d)`` and ``sizes`` (n_V per point, ``(N,)``).
    """
    n, d = X.shape
    check_positive(eps, "eps")
    check_choice(neg_choice, "neg_choice", NEG_CHOICES)
    rng = np.random.default_rng(seed)
    W, o, M = np.empty((n, d)), np.empty(n), np.empty((n, d))
    sizes = np.empty(n, dtype=np.int64)
    bar = tqdm(total=n, desc="DDC-NEG: one SVM per point" if negatives else "DDC: one SVDD per point",
               disable=not progress, mininterval=1.0)
    for start, G in gram_blocks(X):
        for r, hood in enumerate(_block_neighbourhoods(G, start, eps)):
            m = start + r
            Z = X[hood]
            sizes[m] = len(hood)
            M[m] = Z.mean(axis=0)
            if negatives:
                dist = 1 - G[r]                       # cosine distances from x_m (0 to itself)
                far = np.flatnonzero(dist > neg_eta)
                if far.size:
                    if neg_choice == "nearest":
                        neg = far[np.argsort(dist[far], kind="stable")[:n_neg]]
                    else:
                        neg = rng.choice(far, size=min(n_neg, far.size), replace=False)
                    W[m], o[m] = _neg_svm(Z, X[neg], C)
                    continue
            W[m], o[m] = svdd_linear(Z, nu)
        bar.update(len(G))
    bar.close()
    return {"W": W, "o": o, "M": M, "sizes": sizes}


class DeepDensityClustering(LinkageClustering):
    """Deep density clustering, DDC (``negatives=False``) or DDC-NEG (``negatives=True``); scikit-learn API.

    ``eps``: neighbourhood radius in cosine distance (estimate it with :func:`select_eps` on labelled
    *training* identities; the paper's features gave 0.23). ``nu``: SVDD parameter in (0, 1].
    ``neg_eta``, ``n_neg``, ``C``, ``neg_choice``, ``seed``: DDC-NEG's negative threshold
    (:func:`select_eta`), number of negatives, SVM constant, which far points serve as negatives
    (``"nearest"`` or ``"random"``) and the seed of the random choice. ``distance``: ``"arctan"`` (default) or ``"exp"`` map of the similarity.
    Cut at ``threshold`` or ``n_clusters`` (default threshold 1, i.e. s = 0). ``fit`` sets ``labels_``,
    ``linkage_``, ``similarity_`` and ``neighbourhood_sizes_``.
    """

    def __init__(self, eps: float = 0.25, nu: float = 0.5, negatives: bool = False, neg_eta: float = 0.4,
                 n_neg: int = 100, C: float = 1.0, distance: str = "arctan", threshold: float | None = None,
                 n_clusters: int | None = None, progress: bool = False, neg_choice: str = "nearest",
                 seed: int = 0) -> None:
        self.eps = eps
        self.nu = nu
        self.negatives = negatives
        self.neg_eta = neg_eta
        self.n_neg = n_neg
        self.C = C
        self.distance = distance
        self.threshold = threshold
        self.n_clusters = n_clusters
        self.progress = progress
        self.neg_choice = neg_choice
        self.seed = seed

    def _check_params(self) -> None:
        check_positive(self.eps, "eps")
        check_positive(self.nu, "nu")
        if self.nu > 1:
            raise ValueError(f"nu must lie in (0, 1], got {self.nu}")
        if not isinstance(self.negatives, bool):
            raise TypeError(f"negatives must be True or False, got {self.negatives!r}")
        check_positive(self.neg_eta, "neg_eta")
        check_int(self.n_neg, "n_neg")
        check_positive(self.C, "C")
        check_choice(self.distance, "distance", DISTANCES)
        check_choice(self.neg_choice, "neg_choice", NEG_CHOICES)
        check_int(self.seed, "seed", minimum=0)

    def _distances(self, X: np.ndarray) -> np.ndarray:
        h = ddc_evaluators(X, self.eps, self.nu, self.negatives, self.neg_eta, self.n_neg, self.C, self.progress,
                           self.neg_choice, self.seed)
        self.neighbourhood_sizes_ = h["sizes"]
        self.similarity_ = set_similarity(h["W"], h["M"], h["o"])     # (A + A^T) / 2, A[i, j] = mean of E_i over V(x_j)
        return similarity_distance(self.similarity_, self.distance)

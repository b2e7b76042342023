"""companion.clustering: metrics against brute-force definitions, exact identities of PAHC, estimator API."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import AgglomerativeClustering
from scipy.spatial.distance import cdist
from sklearn.metrics import normalized_mutual_info_score

from companion.clustering import (PAHC, AdaptivePAHC, ApproximateRankOrder, CosineAHC, adaptive_radii, average_linkage,
                                  bcubed, check_embeddings, cluster_sizes, curate, cut_linkage, linkage_sweep,
                                  make_identities, neighbour_lists, nmi, pahc_similarity, pairwise_prf,
                                  rank_order_distances, sample_vmf, set_similarity, similarity_distance, sweep)
from companion.clustering.pahc import adaptive_hyperplanes, adaptive_sets, pahc_hyperplanes


def brute_bcubed(t, p):
    n = len(t)
    prec = np.mean([np.mean([t[j] == t[i] for j in range(n) if p[j] == p[i]]) for i in range(n)])
    rec = np.mean([np.mean([p[j] == p[i] for j in range(n) if t[j] == t[i]]) for i in range(n)])
    return prec, rec, 2 * prec * rec / (prec + rec)


def brute_pairwise(t, p):
    pairs = list(itertools.combinations(range(len(t)), 2))
    same_c = [(i, j) for i, j in pairs if p[i] == p[j]]
    same_l = [(i, j) for i, j in pairs if t[i] == t[j]]
    tp = sum(t[i] == t[j] for i, j in same_c)
    prec, rec = tp / len(same_c), tp / len(same_l)
    return prec, rec, 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bcubed_and_pairwise_match_their_brute_force_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, p = rng.integers(0, 5, 40), rng.integers(0, 7, 40)
    np.testing.assert_allclose(bcubed(t, p), brute_bcubed(t, p))
    np.testing.assert_allclose(pairwise_prf(t, p), brute_pairwise(t, p))
    assert nmi(t, p) == pytest.approx(normalized_mutual_info_score(t, p))


def test_metric_edge_cases_and_bad_input() -> None:
    t = np.array([0, 0, 1, 1])
    assert bcubed(t, t) == (1.0, 1.0, 1.0)
    assert bcubed(t, np.arange(4)) == pytest.approx((1.0, 0.5, 2 / 3))
    assert pairwise_prf(np.arange(3), np.arange(3)) == (1.0, 1.0, 1.0)     # no pairs anywhere
    with pytest.raises(ValueError, match="same length"):
        bcubed([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        pairwise_prf([], [])
    with pytest.raises(ValueError, match="1-D"):
        nmi(np.zeros((2, 2)), np.zeros((2, 2)))


def test_vmf_sampler_is_unit_norm_and_concentrated() -> None:
    rng = np.random.default_rng(0)
    mu = np.zeros(16)
    mu[3] = 1
    x = sample_vmf(mu, 200.0, 2000, rng)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    # mean resultant length A_d(kappa) ~ 1 - (d - 1) / (2 kappa) for large kappa
    assert float((x @ mu).mean()) == pytest.approx(1 - 15 / 400, abs=0.01)
    with pytest.raises(ValueError, match="unit norm"):
        sample_vmf(2 * mu, 1.0, 3, rng)
    with pytest.raises(ValueError, match="kappa"):
        sample_vmf(mu, 0.0, 3, rng)


def test_make_identities_shapes_laws_and_determinism() -> None:
    X, y = make_identities(30, sizes="heavy_tailed", dim=8, n_modes=2, seed=3)
    assert X.shape == (len(y), 8) and len(np.unique(y)) == 30
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)
    X2, y2 = make_identities(30, sizes="heavy_tailed", dim=8, n_modes=2, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert (cluster_sizes(10, "uniform", size=14) == 14).all()
    s = cluster_sizes(4000, "singletons", rng=np.random.default_rng(0))
    assert 0.67 < (s == 1).mean() < 0.73 and s.max() <= 12
    assert cluster_sizes(500, "heavy_tailed", max_size=50).max() <= 50
    X, y = make_identities(3, sizes=[1, 2, 3], dim=4)
    assert np.bincount(y).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown law"):
        make_identities(3, sizes="gaussian")
    with pytest.raises(ValueError, match="positive integers"):
        make_identities(3, sizes=[1, 0, 2])
    with pytest.raises(TypeError):
        make_identities(3, dim=4.5)


def test_check_embeddings_normalises_and_rejects_bad_input() -> None:
    X = check_embeddings([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(X, [[0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(ValueError, match="all-zero"):
        check_embeddings([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError):
        check_embeddings([[np.nan, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError):
        check_embeddings([1.0, 2.0])                   # 1-D
    with pytest.raises(ValueError):
        check_embeddings([[1.0, 2.0]])                 # a single sample cannot be clustered
    with pytest.raises(TypeError):
        check_embeddings("features")


def test_average_linkage_of_unit_vectors_is_one_minus_product_of_means() -> None:
    """Eq. 3.1: mean cosine distance between two sets = 1 - mean(U)^T mean(V) (unnormalised means)."""
    X, _ = make_identities(4, sizes=[5, 7, 1, 3], dim=6, seed=1)
    U, V = X[:5], X[5:13]
    np.testing.assert_allclose((1 - U @ V.T).mean(), 1 - U.mean(0) @ V.mean(0))


def test_linkage_cut_matches_scikit_learn_agglomerative() -> None:
    X, y = make_identities(12, sizes="uniform", size=6, dim=8, kappa_center=5.0, seed=2)
    D = CosineAHC()._distances(check_embeddings(X))
    Z = average_linkage(D)
    for t in (0.2, 0.4, 0.7):
        ours = cut_linkage(Z, threshold=t)
        ref = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                      distance_threshold=t).fit_predict(D)
        assert bcubed(ref, ours) == pytest.approx((1.0, 1.0, 1.0))
    assert len(np.unique(cut_linkage(Z, n_clusters=5))) == 5
    with pytest.raises(ValueError, match="exactly one"):
        cut_linkage(Z)
    with pytest.raises(ValueError, match="exceeds"):
        cut_linkage(Z, n_clusters=1000)
    with pytest.raises(ValueError, match="symmetric"):
        average_linkage(D + np.triu(np.ones_like(D)))


def test_neighbour_lists_put_the_point_first_and_sort_by_similarity() -> None:
    X = check_embeddings(np.random.default_rng(0).normal(size=(50, 5)))
    nn = neighbour_lists(X, 10, chunk=7)
    assert (nn[:, 0] == np.arange(50)).all()
    G = X @ X.T
    np.fill_diagonal(G, np.inf)
    np.testing.assert_array_equal(nn, np.argsort(-G, axis=1, kind="stable")[:, :10])
    with pytest.raises(ValueError, match="exceeds"):
        neighbour_lists(X, 51)


def test_pahc_similarity_matrix_product_equals_the_double_loop() -> None:
    """Eq. 2.4-2.5 evaluated literally on a tiny set vs S = (W M^T + b 1^T + transpose) / 2."""
    X, _ = make_identities(6, sizes="uniform", size=5, dim=6, seed=4)
    K, Kp = 3, 8
    S = pahc_similarity(X, n_neighbors=K, neg_start=Kp)
    h = pahc_hyperplanes(X, K, Kp)
    nn = neighbour_lists(X, len(X))
    n = len(X)
    H = lambda i, members: np.mean([h["W"][i] @ X[m] + h["b"][i] for m in members])  # noqa: E731
    loop = np.array([[(H(i, nn[j, :K]) + H(j, nn[i, :K])) / 2 for j in range(n)] for i in range(n)])
    np.testing.assert_allclose(S, loop, atol=1e-10)
    assert h["converged"].all()


def test_pahc_svm_is_the_class_weighted_squared_hinge_svm_of_eq_2_7() -> None:
    """The hyperplane minimises eq. 2.7: no perturbation of (w, b) lowers the objective."""
    X, _ = make_identities(5, sizes="uniform", size=6, dim=4, seed=5)
    K, Kp, C = 2, 10, 10.0
    h = pahc_hyperplanes(X, K, Kp, C=C, tol=1e-10)
    order = neighbour_lists(X, len(X))[0]
    pos, neg = order[:K], order[Kp - 1:]
    Z = np.c_[X[np.r_[pos, neg]], np.ones(len(pos) + len(neg))]
    yk = np.r_[np.ones(len(pos)), -np.ones(len(neg))]
    cw = np.where(yk > 0, C * len(yk) / len(pos), C * len(yk) / len(neg))

    def objective(u):
        return 0.5 * u @ u + (cw * np.maximum(0, 1 - yk * (Z @ u)) ** 2).sum()

    u0 = np.r_[h["W"][0], h["b"][0]]
    rng = np.random.default_rng(0)
    assert all(objective(u0) <= objective(u0 + 1e-3 * rng.normal(size=u0.size)) for _ in range(50))


def test_shared_building_blocks() -> None:
    """Cosine distance, Gram blocks, the symmetric set similarity and the quiet SVM fit shared by PAHC and DDC."""
    from sklearn.svm import LinearSVC

    from companion.clustering import cosine_distances, fit_quietly, gram_blocks, set_similarity

    raw = np.random.default_rng(3).normal(size=(23, 4)) * np.random.default_rng(5).uniform(0.1, 10, size=(23, 1))
    X = check_embeddings(raw)
    # independent reference: SciPy's cosine distance 1 - u.v / (|u| |v|) on the raw, unnormalised rows
    ref = cdist(raw, raw, "cosine")
    np.fill_diagonal(ref, 0.0)
    assert ref.max() > 1.5 and ref[~np.eye(23, dtype=bool)].min() < 0.05   # the whole range [0, 2] is exercised
    D = cosine_distances(X, normalised=True)
    np.testing.assert_allclose(D, ref, atol=1e-12)
    assert (np.diag(D) == 0).all() and (D == D.T).all()
    assert np.array_equal(cosine_distances(raw), D)   # normalises the raw rows itself, with check_embeddings
    np.testing.assert_allclose(CosineAHC()._distances(X), ref, atol=1e-12)
    blocks = list(gram_blocks(X, chunk=5))
    assert [start for start, _ in blocks] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(np.concatenate([G for _, G in blocks]), X @ X.T)
    rng = np.random.default_rng(4)
    W, M, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.normal(size=6)
    S = set_similarity(W, M, b)
    loop = [[(W[i] @ M[j] + b[i] + W[j] @ M[i] + b[j]) / 2 for j in range(6)] for i in range(6)]
    np.testing.assert_allclose(S, loop)
    yk = np.r_[np.ones(12), -np.ones(11)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # nothing may escape
        assert fit_quietly(LinearSVC(max_iter=1, tol=1e-12, dual=True), X, yk) is False
        assert fit_quietly(LinearSVC(dual=False), X, yk) is True


def test_open_set_mnist_separates_seen_and_unseen_digits() -> None:
    from companion.clustering import open_set_mnist

    data = open_set_mnist(40, seen=[0, 1, 2, 3, 4], epochs=1, seed=0, progress=False)
    assert data.features.shape[0] == 40 and data.features.shape == (40, data.seen_features.shape[1])
    assert set(np.unique(data.labels)) <= {5, 6, 7, 8, 9}
    assert set(np.unique(data.seen_labels)) == {0, 1, 2, 3, 4} and len(data.seen_labels) == 500
    with pytest.raises(ValueError, match="exceeds"):      # checked before any training
        open_set_mnist(10_000, epochs=1, progress=False)


def test_similarity_distance_maps() -> None:
    S = np.array([[5.0, 0.0], [0.0, 5.0]])
    D = similarity_distance(S)
    assert D[0, 0] == 0 and D[0, 1] == pytest.approx(1.0)
    assert similarity_distance(np.array([[0.0, 1.0], [1.0, 0.0]]))[0, 1] == pytest.approx(0.5)   # 1 - (2/pi) pi/4
    assert similarity_distance(S, "exp")[0, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown distance"):
        similarity_distance(S, "cosine")


def test_pahc_estimator_api_and_validation() -> None:
    X, y = make_identities(8, sizes="uniform", size=8, dim=8, kappa_center=5.0, seed=6)
    est = PAHC(n_neighbors=3, neg_start=20)
    labels = est.fit_predict(X)
    assert labels.shape == (64,) and est.labels_ is labels
    assert est.similarity_.shape == (64, 64) and est.coef_.shape == (64, 8) and est.n_unconverged_ == 0
    np.testing.assert_allclose(est.similarity_, est.similarity_.T)
    assert linkage_sweep(est.linkage_, y).best_f == pytest.approx(1.0)   # well-separated identities are recovered
    assert len(np.unique(est.cut(n_clusters=8))) == 8
    assert clone(est).get_params()["neg_start"] == 20
    assert PAHC(n_neighbors=3, neg_start=20, max_neg=10).fit(X).labels_.shape == (64,)
    with pytest.raises(ValueError, match="exceeds the number of points"):
        PAHC(neg_start=200).fit(X)
    with pytest.raises(ValueError, match="must exceed n_neighbors"):
        PAHC(n_neighbors=5, neg_start=5).fit(X)
    with pytest.raises(ValueError, match="unknown distance"):
        PAHC(neg_start=20, distance="cos").fit(X)
    with pytest.raises(ValueError, match="not both"):
        PAHC(neg_start=20, threshold=1.0, n_clusters=3).fit(X)
    with pytest.raises(TypeError):
        PAHC(n_neighbors=2.5, neg_start=20).fit(X)
    with pytest.raises(ValueError, match="not fitted"):
        PAHC().cut(threshold=1.0)


def test_estimators_pass_scikit_learn_checks() -> None:
    from sklearn.utils.estimator_checks import check_estimator

    # an all-zero feature vector has no direction on the sphere: rejected on purpose
    expected = {"check_estimators_dtypes": "all-zero rows are rejected: no direction on the hypersphere"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in (CosineAHC(), PAHC(n_neighbors=2, neg_start=5)):
            check_estimator(est, expected_failed_checks=expected)


def test_sweeps_find_the_oracle_operating_point() -> None:
    X, y = make_identities(10, sizes="uniform", size=5, dim=8, kappa_center=5.0, seed=7)
    est = CosineAHC().fit(X)
    sw = linkage_sweep(est.linkage_, y, n_cuts=50)
    assert sw.best_f == pytest.approx(bcubed(y, est.cut(threshold=sw.best_value))[2])
    assert sw.n_clusters[0] == len(y) and sw.n_clusters[-1] == 1       # from all singletons to one cluster
    assert sw.precision_at_recall(1.0) >= sw.precision[-1]
    assert sw.precision_at_recall(1.1) == 0.0
    manual = sweep(lambda k: est.cut(n_clusters=int(k)), [5, 10, 20], y)
    assert manual.n_clusters.tolist() == [5, 10, 20]
    with pytest.raises(ValueError, match="empty"):
        sweep(lambda v: y, [], y)


def test_curate_keeps_majority_members_of_large_clusters() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 0, 0])
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3])
    keep = curate(labels, clusters, min_size=2)
    # cluster 0: majority label 0 (3) -> keep its 0s; cluster 1: label 1 (3) kept; cluster 2: 1 item dropped;
    # cluster 3: label 0 with 2 items, smaller than cluster 0's group of label 0 -> dropped
    assert keep.tolist() == [True, True, True, False, True, True, True, False, False, False]
    with pytest.raises(ValueError, match="equal"):
        curate(labels, clusters[:3])


# --------------------------------------------------------------------------- deep density clustering
from companion.clustering import DeepDensityClustering, cosine_distances, eps_neighbourhoods, select_eps, select_eta, svdd_dual, svdd_linear  # noqa: E402
from companion.clustering.ddc import ddc_evaluators  # noqa: E402


def _svdd_reference(Z: np.ndarray, nu: float) -> tuple[np.ndarray, float]:
    """Eq. 3.3 solved through its dual with a generic solver (SLSQP): min a^T K a, sum a = 1, 0 <= a <= 1/(nu n)."""
    from scipy.optimize import minimize

    n = len(Z)
    K = Z @ Z.T
    cap = 1 / (nu * n)
    res = minimize(lambda a: a @ K @ a, np.full(n, 1 / n), jac=lambda a: 2 * K @ a, method="SLSQP",
                   bounds=[(0, cap)] * n, constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
                   options={"ftol": 1e-14, "maxiter": 500})
    a = res.x
    c = a @ Z
    free = (a > 1e-6) & (a < cap - 1e-6)
    rbar = float(np.mean(((Z[free] - c) ** 2).sum(1)))
    return c, rbar


def test_svdd_linear_matches_a_direct_solution_of_eq_3_3() -> None:
    """Lemma 1 in practice: libsvm's one-class SVM, rescaled, gives the SVDD evaluation R - ||x - c||^2."""
    Z, _ = make_identities(1, sizes=[40], dim=5, kappas=(20.0,), seed=8)
    x = check_embeddings(np.random.default_rng(1).normal(size=(10, 5)))
    for nu in (0.3, 0.6):
        a, o = svdd_linear(Z, nu)
        c, rbar = _svdd_reference(Z, nu)
        np.testing.assert_allclose(x @ a + o, rbar - ((x - c) ** 2).sum(1), atol=2e-3)
        np.testing.assert_allclose(a / 2, c, atol=2e-3)
    a, o = svdd_linear(Z[:1], 0.5)                      # one point: E(x) = -||x - z||^2
    np.testing.assert_allclose(x @ a + o, -((x - Z[0]) ** 2).sum(1))
    with pytest.raises(ValueError, match="nu"):
        svdd_linear(Z, 1.5)


def test_epanechnikov_identity_of_theorem_3_1() -> None:
    """h_OC(x) = (8/3) sum_i alpha_i K_E(||x - x_i|| / 2) - rho - 1 exactly, for unit vectors."""
    Z, _ = make_identities(1, sizes=[60], dim=6, kappas=(30.0,), seed=9)
    nu = 0.4
    alpha = svdd_dual(Z, nu)
    assert alpha.sum() == pytest.approx(1.0) and alpha.max() <= 1 / (nu * len(Z)) + 1e-9
    a, o = svdd_linear(Z, nu)
    x = check_embeddings(np.random.default_rng(2).normal(size=(7, 6)))
    h_oc = (x @ a + o) / 2                              # h_SVDD = 2 h_OC  (eq. 3.9)
    rho = -o / 2
    k_e = lambda u: 0.75 * (1 - u**2)                   # noqa: E731
    dist = np.linalg.norm(x[:, None, :] - Z[None], axis=2)
    np.testing.assert_allclose(h_oc, 8 / 3 * (k_e(dist / 2) @ alpha) - rho - 1, atol=1e-6)


def test_eps_neighbourhoods_and_selection_rules() -> None:
    X, y = make_identities(20, sizes="uniform", size=10, dim=16, kappa_center=2.0, kappas=(200.0,), seed=10)
    hoods = eps_neighbourhoods(X, 0.1)
    # independent reference: one dot product per pair, and x_m added by hand (V(x_m) always holds x_m)
    d = [[1 - float(np.dot(X[m], X[j])) for j in range(len(X))] for m in range(len(X))]
    ref = [sorted({j for j in range(len(X)) if d[m][j] <= 0.1} | {m}) for m in range(len(X))]
    assert [list(h) for h in hoods] == ref
    assert 1 < np.mean([len(h) for h in ref]) < 10      # neither all singletons nor whole identities
    assert min(abs(v - 0.1) for row in d for v in row) > 1e-9   # no pair on the boundary: rounding cannot flip one
    G = X @ X.T
    eps = select_eps(X, y)
    d_match = (1 - G)[(y[:, None] == y[None]) & ~np.eye(len(y), dtype=bool)]
    assert np.quantile(d_match, 0.1) < eps < np.quantile(d_match, 0.9)
    eta = select_eta(X, y)
    assert np.median(d_match) < eta < np.median((1 - G)[y[:, None] != y[None]])
    with pytest.raises(ValueError, match="3 or more"):
        select_eps(X[:2], y[:2])
    with pytest.raises(ValueError, match="matched and mismatched"):
        select_eta(X[y == 0], y[y == 0])
    with pytest.raises(ValueError, match="shape"):
        select_eps(X, y[:-1])


def test_ddc_similarity_matrix_product_equals_eq_3_12_loop() -> None:
    X, _ = make_identities(5, sizes="uniform", size=6, dim=6, kappas=(50.0,), seed=11)
    X = check_embeddings(X)                             # exactly the input the estimator sees
    for negatives in (False, True):
        h = ddc_evaluators(X, eps=0.3, nu=0.5, negatives=negatives, neg_eta=0.5, n_neg=5)
        est = DeepDensityClustering(eps=0.3, negatives=negatives, neg_eta=0.5, n_neg=5).fit(X)
        hoods = eps_neighbourhoods(X, 0.3)
        E = lambda i, z: h["W"][i] @ z + h["o"][i]      # noqa: E731
        n = len(X)
        loop = np.array([[(np.mean([E(i, X[z]) for z in hoods[j]]) + np.mean([E(j, X[z]) for z in hoods[i]])) / 2
                          for j in range(n)] for i in range(n)])
        np.testing.assert_allclose(est.similarity_, loop, atol=1e-10)


def test_ddc_neg_svm_on_a_hand_worked_example() -> None:
    """DDC-NEG (eq. 3.15, Delta = 1) on three unit vectors, where the max-margin SVM is known in closed form.

    x0 = (1, 0), x1 = (0, 1), x2 = (-1, 0); r = 0.5 makes every V(x_m) = {x_m} (the distances are 1, 1, 2).
    With C = 10 the hard-margin solution is optimal (its largest dual coefficient is about 2 < C):
    * eta = 0.5, two negatives: x0 vs {x1, x2} -> w = (1, -1), b = 0; x1 vs {x0, x2} -> w = (0, 2), b = -1;
      x2 mirrors x0: w = (-1, -1), b = 0. All three points lie on the margins: E_m(x_m) = 1, E_m(x_j) = -1.
    * eta = 1.5: only the opposite point is a negative: x0 -> w = (1, 0), b = 0, x2 -> w = (-1, 0), b = 0, and
      x1 has no point farther than 1.5, so it falls back to SVDD of one point: E(x) = 2 x1^T x - 2.
    libsvm's SMO stops at tol = 1e-4, close to the exact coefficients (0.02 allowed); a wrong negative set,
    tie-break or fallback moves them by >= 1.
    """
    tol = 2e-2
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    h = ddc_evaluators(X, eps=0.5, negatives=True, neg_eta=0.5, n_neg=2, C=10.0)
    np.testing.assert_array_equal(h["sizes"], [1, 1, 1])
    np.testing.assert_allclose(h["W"], [[1, -1], [0, 2], [-1, -1]], atol=tol)
    np.testing.assert_allclose(h["o"], [0, -1, 0], atol=tol)
    E = X @ h["W"].T + h["o"]                           # E[j, m] = E_m(x_j)
    np.testing.assert_allclose(np.diag(E), 1.0, atol=tol)           # every positive on its margin
    np.testing.assert_allclose(E[~np.eye(3, dtype=bool)], -1.0, atol=tol)   # and every negative too
    # singleton neighbourhoods: s(x_i, x_j) = (E_i(x_j) + E_j(x_i)) / 2, so -1 off the diagonal, 1 on it
    est = DeepDensityClustering(eps=0.5, negatives=True, neg_eta=0.5, n_neg=2, C=10.0).fit(X)
    np.testing.assert_allclose(est.similarity_, 2 * np.eye(3) - 1, atol=tol)

    h = ddc_evaluators(X, eps=0.5, negatives=True, neg_eta=1.5, n_neg=2, C=10.0)
    np.testing.assert_allclose(h["W"], [[1, 0], [0, 2], [-1, 0]], atol=tol)
    np.testing.assert_allclose(h["o"], [0, -2, 0], atol=tol)
    # only the n_neg nearest points beyond eta are negatives: with n_neg = 1, x1 is separated from x0 alone
    # (x0 and x2 tie at distance 1; the stable sort keeps the first), w = (-1, 1), b = 0, and x2 lands on
    # the positive margin instead of the negative one
    h = ddc_evaluators(X, eps=0.5, negatives=True, neg_eta=0.5, n_neg=1, C=10.0)
    np.testing.assert_allclose(h["W"][1], [-1, 1], atol=tol)
    assert h["o"][1] == pytest.approx(0.0, abs=tol)
    assert X[2] @ h["W"][1] + h["o"][1] == pytest.approx(1.0, abs=tol)


def test_ddc_estimator_api_and_validation() -> None:
    X, y = make_identities(8, sizes="uniform", size=8, dim=8, kappa_center=5.0, kappas=(300.0,), seed=12)
    est = DeepDensityClustering(eps=select_eps(X, y))
    assert est.fit_predict(X).shape == (64,)
    assert linkage_sweep(est.linkage_, y).best_f == pytest.approx(1.0)
    assert (est.neighbourhood_sizes_ >= 1).all()
    assert clone(est).get_params()["nu"] == 0.5
    with pytest.raises(ValueError, match="nu"):
        DeepDensityClustering(nu=2.0).fit(X)
    with pytest.raises(ValueError, match="eps"):
        DeepDensityClustering(eps=0.0).fit(X)
    with pytest.raises(TypeError, match="negatives"):
        DeepDensityClustering(negatives="yes").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sklearn.utils.estimator_checks import check_estimator

        check_estimator(DeepDensityClustering(eps=0.5), expected_failed_checks={
            "check_estimators_dtypes": "all-zero rows are rejected: no direction on the hypersphere"})


def test_ddc_with_single_point_neighbourhoods_is_rescaled_cosine_ahc() -> None:
    """n_V = 1 everywhere: SVDD is closed-form (E_m(x) = 2 x_m^T x - 2), so s_ij = -2 d_ij and DDC is average
    linkage on 1 + (2/pi) arctan(2 d_ij), a monotone map of the cosine distance (the chapter's remark)."""
    X, y = make_identities(6, sizes="uniform", size=12, dim=16, kappa_center=5.0, kappas=(150.0,), seed=3)
    Xn = check_embeddings(X)
    D = cosine_distances(Xn, normalised=True)
    est = DeepDensityClustering(eps=1e-9).fit(X)
    assert (est.neighbourhood_sizes_ == 1).all()
    np.testing.assert_allclose(est.similarity_, -2 * D, atol=1e-12)
    mapped = 1 + 2 / np.pi * np.arctan(2 * D)
    np.fill_diagonal(mapped, 0.0)
    np.testing.assert_allclose(est.linkage_, average_linkage(mapped), atol=1e-12)


def test_ddc_clusters_an_easy_population_whose_neighbourhoods_hold_many_points() -> None:
    """Six well separated identities of 20 points; r from eq. 3.2 gives neighbourhoods of several points,
    where the density estimate changes the order of the pairs, and cutting DDC (and DDC-NEG) into six clusters
    recovers the identities: a valid partition 0..5 with every label used, BCubed F = 1."""
    X, y = make_identities(6, sizes="uniform", size=20, dim=16, kappa_center=5.0, kappas=(150.0,), seed=3)
    eps, eta = select_eps(X, y), select_eta(X, y)
    est = DeepDensityClustering(eps=eps).fit(X)
    assert np.median(est.neighbourhood_sizes_) >= 5
    # not a monotone map of the cosine: some pair is closer by cosine but farther by DDC
    D = cosine_distances(X)
    iu = np.triu_indices(len(y), 1)
    order = np.argsort(D[iu], kind="stable")
    assert (np.diff(est.similarity_[iu][order]) > 1e-9).any()
    for fitted in (est, DeepDensityClustering(eps=eps, negatives=True, neg_eta=eta).fit(X)):
        labels = fitted.cut(n_clusters=6)
        assert labels.shape == y.shape
        assert sorted(np.unique(labels)) == list(range(6))
        assert bcubed(y, labels) == pytest.approx((1.0, 1.0, 1.0))
        assert linkage_sweep(fitted.linkage_, y).best_f == pytest.approx(1.0)


def test_ddc_neg_random_negatives_are_reproducible_and_validated() -> None:
    X, _ = make_identities(5, sizes="uniform", size=10, dim=8, kappa_center=5.0, kappas=(100.0,), seed=4)
    X = check_embeddings(X)
    near = ddc_evaluators(X, eps=0.2, negatives=True, neg_eta=0.3, n_neg=5)
    r0 = ddc_evaluators(X, eps=0.2, negatives=True, neg_eta=0.3, n_neg=5, neg_choice="random", seed=0)
    r0b = ddc_evaluators(X, eps=0.2, negatives=True, neg_eta=0.3, n_neg=5, neg_choice="random", seed=0)
    r1 = ddc_evaluators(X, eps=0.2, negatives=True, neg_eta=0.3, n_neg=5, neg_choice="random", seed=1)
    np.testing.assert_array_equal(r0["W"], r0b["W"])
    assert not np.allclose(r0["W"], near["W"])
    assert not np.allclose(r0["W"], r1["W"])
    with pytest.raises(ValueError, match="neg_choice"):
        DeepDensityClustering(negatives=True, neg_choice="hardest").fit(X)


def test_ssc_omp_separates_independent_subspaces() -> None:
    """Three 3-d subspaces of R^12 in general position: every point is coded by points of its own subspace,
    so spectral clustering of |C| + |C|^T recovers them exactly."""
    from companion.clustering.baselines import ssc_omp_labels

    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    X = np.concatenate([rng.normal(size=(30, 3)) @ Q[:, 3 * i:3 * i + 3].T for i in range(3)])
    y = np.repeat([0, 1, 2], 30)
    assert bcubed(y, ssc_omp_labels(X, 3, n_nonzero=3)) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="n_nonzero"):
        ssc_omp_labels(X, 3, n_nonzero=13)


# --- Approximate Rank-Order (ARO) and adaptive-set PAHC --------------------------------------------------------

def brute_rank_order(X: np.ndarray, k: int) -> np.ndarray:
    """The rank-order distance written literally from its definition (Otto, Wang and Jain 2018)."""
    n = len(X)
    G = X @ X.T
    lists = []
    for a in range(n):
        others = sorted((j for j in range(n) if j != a), key=lambda j: (-G[a, j], j))
        lists.append([a] + others[:k - 1])

    def rank(a: int, b: int) -> int:
        return lists[a].index(b) if b in lists[a] else k

    def d(a: int, b: int) -> int:
        return sum(lists[a][i] not in lists[b] for i in range(1, min(rank(a, b), k - 1) + 1))

    D = np.full((n, n), float(k))
    for a in range(n):
        for b in range(n):
            if a == b:
                D[a, b] = 0.0
            elif b in lists[a] or a in lists[b]:
                D[a, b] = (d(a, b) + d(b, a)) / min(rank(a, b), rank(b, a))
    return D


def test_rank_order_distance_by_hand() -> None:
    # four points on the unit circle at angles 0, 0.1, 0.3 and 2.0 rad; lists of k = 3 (the point first):
    # 0: [0, 1, 2], 1: [1, 0, 2], 2: [2, 1, 0], 3: [3, 2, 1]
    X = np.stack([np.cos([0, 0.1, 0.3, 2.0]), np.sin([0, 0.1, 0.3, 2.0])], axis=1)
    D = rank_order_distances(X, n_neighbors=3)
    assert D[0, 1] == 0 and D[0, 2] == 0            # shared lists: distance 0
    # (2, 3): O_3(2) = 1, 2 is in its own list -> d(3, 2) = 0; O_2(3) = k -> d(2, 3) counts 1 and 0, and 0 is
    # not in 3's list -> 1; D = (0 + 1) / min(3, 1) = 1
    assert D[2, 3] == D[3, 2] == 1.0
    # (1, 3): d(3, 1) = 0 (2 and 1 are in 1's list), d(1, 3) = 1 (0 is not in 3's list); D = 1 / min(3, 2)
    assert D[1, 3] == 0.5
    assert D[0, 3] == 3.0                           # neither in the other's list: not linked, the bound k
    np.testing.assert_array_equal(D, D.T)


@pytest.mark.parametrize("seed, k", [(0, 4), (1, 7), (2, 15)])
def test_rank_order_distance_matches_its_literal_definition(seed: int, k: int) -> None:
    X = check_embeddings(np.random.default_rng(seed).normal(size=(15, 4)))
    np.testing.assert_allclose(rank_order_distances(X, n_neighbors=k), brute_rank_order(X, k))


def test_aro_recovers_well_separated_identities_and_validates() -> None:
    X, y = make_identities(6, sizes="uniform", size=10, dim=16, kappa_center=0.5, kappas=(3000.0,), seed=1)
    est = ApproximateRankOrder(n_neighbors=10).fit(X)
    assert linkage_sweep(est.linkage_, y).best_f == 1.0
    np.testing.assert_array_equal(nmi(y, ApproximateRankOrder(n_neighbors=10, n_clusters=6).fit_predict(X)), 1.0)
    assert est.distances_.shape == (60, 60)
    assert clone(est).get_params()["n_neighbors"] == 10
    with pytest.raises(ValueError, match="exceeds the number of points"):
        ApproximateRankOrder(n_neighbors=100).fit(X)
    with pytest.raises(ValueError, match="n_neighbors"):
        ApproximateRankOrder(n_neighbors=1).fit(X)


def test_adaptive_sets_follow_the_radii() -> None:
    # similarities of point 0 to six points: itself, two within r_pos = 0.2, one between the radii, two beyond 0.5
    row = np.array([1.0, 0.95, 0.85, 0.6, 0.3, 0.45])
    pos, neg = adaptive_sets(row, 0, r_pos=0.2, r_neg=0.5, n_neg=1, pos_fraction=0.5)
    np.testing.assert_array_equal(pos, [0, 1])      # nearest half (rounded up) of {0, 1, 2}, the point first
    np.testing.assert_array_equal(neg, [5])         # the nearest of the points beyond 0.5
    pos, neg = adaptive_sets(row, 0, r_pos=0.01, r_neg=0.5, n_neg=5, pos_fraction=0.5)
    np.testing.assert_array_equal(pos, [0])         # nobody within r_pos: the point alone, as K = 1
    np.testing.assert_array_equal(neg, [5, 4])
    with pytest.raises(ValueError, match="beyond r_neg"):
        adaptive_sets(row, 0, r_pos=0.2, r_neg=0.9, n_neg=5, pos_fraction=0.5)


def test_adaptive_radii_are_the_pair_distance_quantiles() -> None:
    X, y = make_identities(8, sizes="uniform", size=6, dim=8, seed=0)
    D = 1 - X @ X.T
    iu = np.triu_indices(len(y), 1)
    same = (y[:, None] == y[None, :])[iu]
    r_pos, r_neg = adaptive_radii(X, y, pos_quantile=0.5, neg_quantile=0.01)
    assert r_pos == pytest.approx(np.median(D[iu][same]))
    assert r_neg == pytest.approx(max(r_pos, np.quantile(D[iu][~same], 0.01)))
    with pytest.raises(ValueError, match="same-identity pair"):
        adaptive_radii(X, np.arange(len(y)))
    with pytest.raises(ValueError, match="pos_quantile"):
        adaptive_radii(X, y, pos_quantile=1.5)


def test_adaptive_pahc_sizes_its_positive_sets_and_clusters() -> None:
    X, y = make_identities(6, sizes=[1, 1, 2, 10, 20, 20], dim=16, kappa_center=0.5, kappas=(3000.0,), seed=2)
    r_pos, r_neg = adaptive_radii(X, y)
    est = AdaptivePAHC(r_pos=r_pos, r_neg=r_neg, n_neg=20).fit(X)
    sizes = np.bincount(y)[y]
    assert (est.n_pos_[sizes == 1] == 1).all()       # singletons: K = 1
    assert np.median(est.n_pos_[sizes == 20]) > 3    # large identities: larger positive sets
    assert linkage_sweep(est.linkage_, y).best_f == 1.0
    h = adaptive_hyperplanes(check_embeddings(X), r_pos, r_neg, n_neg=20)
    np.testing.assert_allclose(est.similarity_, set_similarity(h["W"], h["M"], h["b"]))
    with pytest.raises(ValueError, match="r_neg"):
        AdaptivePAHC(r_pos=0.3, r_neg=0.2).fit(X)
    with pytest.raises(ValueError, match="distance"):
        AdaptivePAHC(distance="cos").fit(X)

"""Clustering deep features without knowing the number of identities (book part "Structure in deep features").

* :mod:`~companion.clustering.synthetic` -- identities on the unit hypersphere with controllable spread,
  density, sub-modes and cluster-size law;
* :mod:`~companion.clustering.metrics` -- BCubed and pairwise precision/recall/F, NMI, threshold sweeps
  (oracle and transferred operating points);
* :mod:`~companion.clustering.linkage` -- average-linkage AHC on a precomputed distance, the shared
  estimator base and the cosine baseline :class:`CosineAHC`;
* :mod:`~companion.clustering.pahc` -- proximity-aware hierarchical clustering (:class:`PAHC`);
* :mod:`~companion.clustering.ddc` -- deep density clustering (:class:`DeepDensityClustering`, DDC and DDC-NEG);
* :mod:`~companion.clustering.baselines` -- k-means, DBSCAN, HDBSCAN, spectral, affinity propagation;
* :mod:`~companion.clustering.features` -- open-set deep features of the embedded MNIST and label curation.

Estimators follow scikit-learn: ``__init__`` stores parameters, ``fit`` returns ``self`` and sets
``labels_`` (and ``linkage_``, so that other thresholds can be cut without refitting).
"""
from .linkage import CosineAHC, LinkageClustering, average_linkage, check_embeddings, cut_linkage
from .metrics import Sweep, bcubed, fit_sweep, linkage_sweep, nmi, pairwise_prf, sweep
from .pahc import PAHC, neighbour_lists, pahc_distance, pahc_similarity
from .ddc import DeepDensityClustering, eps_neighbourhoods, select_eps, select_eta, svdd_dual, svdd_linear
from .synthetic import REGIMES, cluster_sizes, make_identities, make_regime, sample_vmf
from .features import curate, embed, train_feature_cnn

__all__ = [
    "PAHC", "REGIMES", "CosineAHC", "DeepDensityClustering", "eps_neighbourhoods", "select_eps", "select_eta", "svdd_dual", "svdd_linear", "LinkageClustering", "Sweep", "average_linkage", "bcubed", "check_embeddings", "cluster_sizes",
    "curate", "cut_linkage", "embed", "fit_sweep", "linkage_sweep", "make_identities", "make_regime", "neighbour_lists", "nmi", "pahc_distance", "pahc_similarity",
    "pairwise_prf", "sample_vmf", "sweep", "train_feature_cnn",
]

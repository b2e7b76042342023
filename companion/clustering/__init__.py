"""Clustering deep features without knowing the number of identities (book part "Structure in deep features").

* :mod:`~companion.clustering.synthetic` -- identities on the unit hypersphere with controllable spread,
  density, sub-modes and cluster-size law;
* :mod:`~companion.clustering.metrics` -- BCubed and pairwise precision/recall/F, NMI, threshold sweeps
  (oracle and transferred operating points);
* :mod:`~companion.clustering.linkage` -- average-linkage AHC on a precomputed distance, the shared
  estimator base, the cosine baseline :class:`CosineAHC` and the shared building blocks (cosine distance,
  Gram blocks, the symmetric set similarity and its map to a distance, quiet SVM fits);
* :mod:`~companion.clustering.pahc` -- proximity-aware hierarchical clustering (:class:`PAHC`, and
  :class:`AdaptivePAHC` with the adaptive sets of the source's IJB-B study);
* :mod:`~companion.clustering.ddc` -- deep density clustering (:class:`DeepDensityClustering`, DDC and DDC-NEG);
* :mod:`~companion.clustering.baselines` -- k-means, DBSCAN, HDBSCAN, spectral, affinity propagation, and
  Approximate Rank-Order clustering (:class:`ApproximateRankOrder`);
* :mod:`~companion.clustering.features` -- open-set deep features of the embedded MNIST (:func:`open_set_mnist`) and label curation.

Estimators follow scikit-learn: ``__init__`` stores parameters, ``fit`` returns ``self`` and sets
``labels_`` (and ``linkage_``, so that other thresholds can be cut without refitting).
"""
from .linkage import (DISTANCES, CosineAHC, LinkageClustering, average_linkage, check_embeddings, cosine_distances,
                      cut_linkage, fit_quietly, gram_blocks, neighbour_lists, set_similarity, similarity_distance)
from .metrics import Sweep, bcubed, fit_sweep, linkage_sweep, nmi, pairwise_prf, sweep
from .pahc import PAHC, AdaptivePAHC, adaptive_radii, pahc_similarity
from .baselines import ApproximateRankOrder, rank_order_distances
from .ddc import DeepDensityClustering, eps_neighbourhoods, select_eps, select_eta, svdd_dual, svdd_linear
from .synthetic import REGIMES, cluster_sizes, make_identities, make_regime, sample_vmf
from .features import OpenSetFeatures, curate, embed, open_set_mnist, train_feature_cnn

__all__ = [
    "DISTANCES", "AdaptivePAHC", "ApproximateRankOrder", "CosineAHC", "DeepDensityClustering", "LinkageClustering",
    "OpenSetFeatures", "PAHC", "REGIMES", "Sweep", "adaptive_radii", "average_linkage", "bcubed",
    "check_embeddings", "cluster_sizes", "cosine_distances", "curate", "cut_linkage", "embed", "eps_neighbourhoods",
    "fit_quietly", "fit_sweep", "gram_blocks", "linkage_sweep", "make_identities", "make_regime", "neighbour_lists",
    "nmi", "open_set_mnist", "pahc_similarity", "pairwise_prf", "rank_order_distances", "sample_vmf", "select_eps",
    "select_eta", "set_similarity", "similarity_distance", "svdd_dual", "svdd_linear", "sweep", "train_feature_cnn",
]

"""Embedding metrics used where outputs have no labels: rank order of pairwise similarities, nearest neighbours."""
from __future__ import annotations

import numpy as np


def test_similarity_spearman_matches_scipy_and_is_one_for_a_scaled_copy():
    from scipy.stats import spearmanr

    from edgeq.metrics import similarity_spearman

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 8))
    noisy = ref + rng.normal(scale=0.5, size=ref.shape)
    assert similarity_spearman(ref, 3.0 * ref) == 1.0  # cosine ignores length
    u = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    iu = np.triu_indices(20, 1)
    expected = spearmanr((u(ref) @ u(ref).T)[iu], (u(noisy) @ u(noisy).T)[iu])[0]
    assert abs(similarity_spearman(ref, noisy) - expected) < 1e-9
    assert similarity_spearman(ref, noisy) < 0.99


def test_neighbour_agreement_counts_changed_nearest_neighbours():
    from edgeq.metrics import neighbour_agreement

    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert neighbour_agreement(ref, ref * 2) == 1.0
    swapped = ref.copy()
    swapped[1] = [0.2, 0.8]  # 1's nearest becomes 3; 0 keeps 1, 2 and 3 keep each other
    assert neighbour_agreement(ref, swapped) == 0.75

"""LSA word vectors for the overview Embedding (--embedding-init lsa)."""

from __future__ import annotations

import numpy as np

from job.model.embeddings import lsa_vectors


def test_words_that_share_overviews_get_nearby_vectors():
    # Tokens 2-3 always appear together (space films), 4-5 together (romance films),
    # 6 is in the vocabulary but never in a training overview; 0 pads, 1 is unknown.
    space, romance = [2, 3, 1, 0], [4, 5, 0, 0]
    tokens = np.array([space, romance] * 10 + [[2, 3, 4, 0]])

    vectors = lsa_vectors(tokens, vocabulary_size=7, width=4)

    assert vectors.shape == (7, 4) and vectors.dtype == np.float32
    assert not vectors[[0, 1, 6]].any()  # padding, unknown and unseen tokens stay zero

    def cosine(a: int, b: int) -> float:
        return float(
            vectors[a] @ vectors[b] / np.linalg.norm(vectors[a]) / np.linalg.norm(vectors[b])
        )

    assert cosine(2, 3) > 0.95 and cosine(4, 5) > 0.95
    assert cosine(2, 4) < 0.5
    # Keras's default Embedding scale, so the learning rate means the same.
    assert abs(vectors[2:6].std() - 0.029) < 0.01

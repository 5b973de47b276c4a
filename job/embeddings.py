"""Starting word vectors for the overview Embedding (`train --embedding-init lsa`).

The notebook starts its 10,000 x 256 Embedding at random and has 4,228 training overviews to
learn it from. Latent semantic analysis gives it a start from those same overviews (no
outside data, no labels): words that share overviews get nearby vectors. TF-IDF of the
training overviews over the vectorizer's vocabulary -> truncated SVD -> one row a token.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def lsa_vectors(train_tokens: np.ndarray, vocabulary_size: int, width: int) -> np.ndarray:
    """(vocabulary_size, width) float32 word vectors from token ids (films, length).

    Rows 0 (padding) and 1 (out of vocabulary) stay zero; the scale matches Keras's
    default uniform(-0.05, 0.05) initializer (std 0.029) so training starts as usual.
    """
    films = len(train_tokens)
    counts = np.zeros((films, vocabulary_size), np.float32)  # (films, tokens)
    rows = np.repeat(np.arange(films), train_tokens.shape[1])
    np.add.at(counts, (rows, train_tokens.reshape(-1)), 1.0)
    counts[:, :2] = 0.0
    document_frequency = (counts > 0).sum(axis=0)
    idf = np.log((1 + films) / (1 + document_frequency)) + 1
    tfidf = np.log1p(counts) * idf  # sublinear term frequency
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-9)
    # tfidf = U S V^T; token vectors are the rows of V S (tokens, rank).
    singular, vt = top_singular(tfidf, min(width, *tfidf.shape))
    rank = len(singular)
    vectors = np.zeros((vocabulary_size, width), np.float32)
    vectors[:, :rank] = (vt[:rank].T * singular[:rank]).astype(np.float32)
    seen = document_frequency > 0  # padding, unknown and unseen tokens: exactly zero
    vectors[~seen] = 0.0
    used = vectors[seen]
    scale = 0.029 / max(float(used.std()), 1e-9) if len(used) else 1.0
    log.info("LSA embedding: %d films, %d tokens, rank %d", films, vocabulary_size, rank)
    return vectors * scale


def top_singular(matrix: np.ndarray, rank: int, power_iterations: int = 4):
    """The top `rank` singular values and right singular vectors (rank, columns) of
    `matrix`, by randomized SVD (Halko et al. 2011): seconds where a full SVD of the
    (films, tokens) matrix takes minutes. Seeded, so a run's vectors are reproducible."""
    generator = np.random.default_rng(0)
    sketch = matrix @ generator.standard_normal((matrix.shape[1], rank + 10), np.float32)
    basis, _ = np.linalg.qr(sketch)  # (rows, rank + 10): spans the top of matrix's range
    for _ in range(power_iterations):  # sharpen it towards the largest singular values
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    _, singular, vt = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return singular[:rank], vt[:rank]

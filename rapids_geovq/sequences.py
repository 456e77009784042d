"""Sequences of code indices for the autoregressive prior, and codebook statistics."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def dataset_sequences(codes, seq_len: int) -> np.ndarray:
    """Codes of consecutive images in dataset order, cut into rows of ``seq_len`` (remainder dropped).

    Returns
    -------
    int64 array of shape (len(codes) // seq_len, seq_len)
    """
    codes = np.asarray(codes, dtype=np.int64)
    m = codes.size // seq_len
    if m == 0:
        raise ValueError(f"{codes.size} codes are fewer than one sequence of length {seq_len}")
    return codes[: m * seq_len].reshape(m, seq_len)


def random_walk_sequences(graph, node_codes, n_walks: int, seq_len: int, *, seed=None) -> np.ndarray:
    """Codes visited by uniform random walks on a graph.

    Each walk starts at a uniformly drawn node and moves to a uniformly drawn neighbour at each
    step; the sequence is the code of each visited node.

    Parameters
    ----------
    graph : sparse matrix of shape (n, n)
        Every node needs at least one neighbour (a kNN graph has k).
    node_codes : int array of shape (n,)
    n_walks, seq_len : int
    seed : int or None

    Returns
    -------
    int64 array of shape (n_walks, seq_len)
    """
    g = sp.csr_matrix(graph)
    codes = np.asarray(node_codes, dtype=np.int64)
    deg = np.diff(g.indptr)
    if (deg == 0).any():
        raise ValueError(f"{int((deg == 0).sum())} graph nodes have no neighbour; a walk would stop there")
    rng = np.random.default_rng(seed)
    pos = rng.integers(g.shape[0], size=n_walks)
    out = np.empty((n_walks, seq_len), dtype=np.int64)
    for t in range(seq_len):
        out[:, t] = codes[pos]
        step = (rng.random(n_walks) * deg[pos]).astype(np.int64)
        pos = g.indices[g.indptr[pos] + step]
    return out


def code_histogram(codes, n_codes: int) -> np.ndarray:
    return np.bincount(np.asarray(codes, dtype=np.int64).ravel(), minlength=n_codes)


def perplexity(codes, n_codes: int) -> float:
    """exp(entropy) of the code usage: the effective number of codes used."""
    p = code_histogram(codes, n_codes) / np.asarray(codes).size
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def dead_codes(codes, n_codes: int) -> int:
    """Codes that no item uses."""
    return int((code_histogram(codes, n_codes) == 0).sum())


def label_purity(codes, labels, n_codes: int) -> float:
    """Fraction of items whose label is the majority label of their code."""
    codes = np.asarray(codes, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    table = np.zeros((n_codes, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(table, (codes, labels), 1)
    return float(table.max(axis=1).sum() / codes.size)


def unigram_entropy(codes, n_codes: int) -> float:
    """Entropy of the code distribution in nats per token."""
    p = code_histogram(codes, n_codes) / np.asarray(codes).size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def unigram_nll(train_codes, heldout_codes, n_codes: int) -> float:
    """Held-out NLL per token (nats) of a unigram model fitted on ``train_codes`` (add-one smoothed):
    the baseline an autoregressive prior has to beat."""
    counts = code_histogram(train_codes, n_codes) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(heldout_codes, dtype=np.int64).ravel()].mean())


# ---------------------------------------------------------------- rates of discrete codes
#
# A discrete row of Table 1 costs its reconstruction BCE plus the rate -log p(code) of
# sending the image's code under some prior; with both in nats per image the sum is an
# upper bound on -log p(x) that shares a scale with the VAE's negative ELBO.


def _codes_in_range(codes, n_codes: int, what: str) -> np.ndarray:
    c = np.asarray(codes)
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"{what} must hold integer code indices, got dtype {c.dtype}")
    c = c.astype(np.int64).ravel()
    if c.size and (c.min() < 0 or c.max() >= n_codes):
        raise ValueError(f"{what} must lie in [0, {n_codes}); got values in "
                         f"[{c.min()}, {c.max()}] -- is n_codes the codebook size?")
    return c


def uniform_rate(codes, n_codes: int) -> np.ndarray:
    """Rate of each code under the uniform prior over ``n_codes`` codes.

    Parameters
    ----------
    codes : int array, shape (N,)
        One code per image, in [0, n_codes).
    n_codes : int

    Returns
    -------
    np.ndarray, float64, shape (N,)
        ``log(n_codes)`` nats for every image.
    """
    c = _codes_in_range(codes, n_codes, "codes")
    return np.full(c.size, np.log(n_codes), dtype=np.float64)


def unigram_log_probs(train_codes, n_codes: int, *, pseudocount: float = 1.0) -> np.ndarray:
    """Log-probabilities of the smoothed unigram distribution of the training codes.

    ``p(c) = (count(c) + pseudocount) / (N + n_codes * pseudocount)``; the default
    add-one smoothing matches :func:`unigram_nll` and gives a code never seen in
    training a finite rate of ``log(N + n_codes)`` nats.

    Parameters
    ----------
    train_codes : int array, any shape, values in [0, n_codes)
    n_codes : int
    pseudocount : float
        Added to every count; must be > 0 so every rate is finite.

    Returns
    -------
    np.ndarray, float64, shape (n_codes,)
    """
    if not pseudocount > 0:
        raise ValueError(f"pseudocount must be positive so unseen codes get a finite rate, got {pseudocount}")
    counts = np.bincount(_codes_in_range(train_codes, n_codes, "train_codes"),
                         minlength=n_codes) + float(pseudocount)
    return np.log(counts / counts.sum())


def unigram_rate(train_codes, codes, n_codes: int, *, pseudocount: float = 1.0) -> np.ndarray:
    """Rate ``-log p(code)`` of each code under the training codes' smoothed unigram.

    Parameters
    ----------
    train_codes : int array, values in [0, n_codes)
        Codes of the training images (the prior is fitted on them only).
    codes : int array, shape (N,)
        Codes of the evaluated (test) images.
    n_codes : int
    pseudocount : float
        See :func:`unigram_log_probs`; 1 (add-one) by default.

    Returns
    -------
    np.ndarray, float64, shape (N,)
        Nats per image; its mean equals ``unigram_nll(train_codes, codes, n_codes)``
        for the default pseudocount.
    """
    logp = unigram_log_probs(train_codes, n_codes, pseudocount=pseudocount)
    return -logp[_codes_in_range(codes, n_codes, "codes")]


def rate_summary(bce, train_codes, codes, n_codes: int, *, pseudocount: float = 1.0) -> dict:
    """Reconstruction plus rate, per image and summed, under the uniform and unigram priors.

    Parameters
    ----------
    bce : float array, shape (N,)
        Reconstruction BCE of each image in nats (summed over pixels).
    train_codes : int array
        Training codes, for the unigram prior.
    codes : int array, shape (N,)
        The images' codes.
    n_codes : int
    pseudocount : float
        Unigram smoothing (see :func:`unigram_log_probs`).

    Returns
    -------
    dict
        ``{"uniform": {...}, "unigram": {...}}``, each with float ``rate_per_image``,
        ``rate_sum``, ``total_per_image`` (mean of bce + rate), ``total_se`` (its standard
        error over images, NaN for one image), ``total_sum`` and int ``n``.
    """
    b = np.asarray(bce, dtype=np.float64).ravel()
    c = _codes_in_range(codes, n_codes, "codes")
    if b.shape != c.shape:
        raise ValueError(f"bce has {b.size} values but codes has {c.size}; pass one of each per image")
    out = {}
    for name, rate in (("uniform", uniform_rate(c, n_codes)),
                       ("unigram", unigram_rate(train_codes, c, n_codes, pseudocount=pseudocount))):
        total = b + rate
        se = float(total.std(ddof=1) / np.sqrt(total.size)) if total.size > 1 else float("nan")
        out[name] = {"rate_per_image": float(rate.mean()) if rate.size else float("nan"),
                     "rate_sum": float(rate.sum()),
                     "total_per_image": float(total.mean()) if total.size else float("nan"),
                     "total_se": se, "total_sum": float(total.sum()), "n": int(total.size)}
    return out

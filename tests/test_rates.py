"""Tests for the per-image rates of discrete codes in rapids_geovq.sequences."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rapids_geovq.sequences import (
    rate_summary,
    unigram_log_probs,
    unigram_nll,
    unigram_rate,
    uniform_rate,
)

K = 4
TRAIN = np.array([0, 0, 1, 2])  # code 3 never seen in training
TEST = np.array([0, 3, 3, 1])
# add-one counts [3, 2, 2, 1] over 8 -> p = [3/8, 2/8, 2/8, 1/8]
RATE_HAND = np.array([math.log(8 / 3), math.log(8), math.log(8), math.log(4)])


def test_uniform_rate_is_log_k() -> None:
    r = uniform_rate(TEST, K)
    assert r.dtype == np.float64 and r.shape == (4,)
    np.testing.assert_allclose(r, math.log(4))


def test_unigram_rate_by_hand() -> None:
    np.testing.assert_allclose(np.exp(unigram_log_probs(TRAIN, K)), [3 / 8, 2 / 8, 2 / 8, 1 / 8])
    r = unigram_rate(TRAIN, TEST, K)
    assert r.dtype == np.float64 and r.shape == (4,)
    np.testing.assert_allclose(r, RATE_HAND)
    # the unseen code gets a finite rate log(N + K)
    assert np.isfinite(r).all() and r[1] == pytest.approx(math.log(len(TRAIN) + K))
    # consistent with the per-token unigram baseline of the prior table
    assert r.mean() == pytest.approx(unigram_nll(TRAIN, TEST, K))


def test_unigram_pseudocount() -> None:
    # pseudocount 0.5: counts [2.5, 1.5, 1.5, 0.5] over 6
    r = unigram_rate(TRAIN, [3, 0], K, pseudocount=0.5)
    np.testing.assert_allclose(r, [math.log(6 / 0.5), math.log(6 / 2.5)])
    with pytest.raises(ValueError, match="pseudocount"):
        unigram_rate(TRAIN, TEST, K, pseudocount=0.0)


def test_rate_summary_by_hand() -> None:
    bce = np.array([10.0, 20.0, 30.0, 40.0])
    out = rate_summary(bce, TRAIN, TEST, K)
    assert set(out) == {"uniform", "unigram"}
    u, g = out["uniform"], out["unigram"]
    assert u["rate_per_image"] == pytest.approx(math.log(4))
    assert u["rate_sum"] == pytest.approx(4 * math.log(4))
    assert u["total_per_image"] == pytest.approx(25 + math.log(4))
    assert u["total_sum"] == pytest.approx(100 + 4 * math.log(4))
    # a constant rate leaves the spread of the BCE: sd of [10, 20, 30, 40] / 2
    assert u["total_se"] == pytest.approx(np.std([10, 20, 30, 40], ddof=1) / 2)
    totals = bce + RATE_HAND
    assert g["rate_per_image"] == pytest.approx(RATE_HAND.mean())
    assert g["rate_sum"] == pytest.approx(RATE_HAND.sum())
    assert g["total_per_image"] == pytest.approx(totals.mean())
    assert g["total_sum"] == pytest.approx(totals.sum())
    assert g["total_se"] == pytest.approx(totals.std(ddof=1) / 2)
    assert u["n"] == g["n"] == 4
    assert math.isnan(rate_summary([5.0], TRAIN, [2], K)["unigram"]["total_se"])


def test_rates_reject_bad_codes() -> None:
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        uniform_rate([0, 4], K)
    with pytest.raises(ValueError, match="train_codes"):
        unigram_rate([0, -1], TEST, K)
    with pytest.raises(ValueError, match="integer"):
        unigram_rate(TRAIN, np.array([0.0, 1.5]), K)
    with pytest.raises(ValueError, match="one of each per image"):
        rate_summary([1.0, 2.0], TRAIN, TEST, K)

"""Tests for rapids_geovq.aggregate: mean / sd / n over seeds, and formatting."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rapids_geovq.aggregate import aggregate_seeds, format_mean_sd, is_summary

RUNS = [
    {"vae": {"bce": 80.0, "kl": 25.0}, "dead_codes": 2, "backend": "numpy", "converged": True,
     "sizes": [1, 2], "note": "seed 0"},
    {"vae": {"bce": 82.0, "kl": np.float32(24.0)}, "dead_codes": np.int64(0), "backend": "numpy",
     "converged": True, "sizes": [1, 2], "note": "seed 1"},
    {"vae": {"bce": 84.5, "kl": 26.0}, "dead_codes": 1, "backend": "numpy", "converged": True,
     "sizes": [1, 2], "note": "seed 2"},
]


def test_aggregate_by_hand() -> None:
    out = aggregate_seeds(RUNS)
    # bce: mean 82.1667, deviations -2.1667, -0.1667, 2.3333 -> var (4.6944+0.0278+5.4444)/2
    bce = out["vae"]["bce"]
    assert bce["n"] == 3
    assert bce["mean"] == pytest.approx(246.5 / 3)
    assert bce["sd"] == pytest.approx(math.sqrt(10.1666666667 / 2))
    assert out["vae"]["kl"] == {"mean": 25.0, "sd": 1.0, "n": 3}
    assert out["dead_codes"] == {"mean": 1.0, "sd": 1.0, "n": 3}
    assert isinstance(out["dead_codes"]["mean"], float)
    # equal non-numeric leaves are kept; bools and lists are not averaged
    assert out["backend"] == "numpy" and out["converged"] is True and out["sizes"] == [1, 2]
    # a differing non-numeric leaf is left out by default ...
    assert "note" not in out
    # ... and is an error when strict
    with pytest.raises(ValueError, match="note"):
        aggregate_seeds(RUNS, strict=True)


def test_one_seed_has_nan_sd() -> None:
    out = aggregate_seeds(RUNS[:1])
    assert out["vae"]["bce"]["mean"] == 80.0 and out["vae"]["bce"]["n"] == 1
    assert math.isnan(out["vae"]["bce"]["sd"])
    assert out["note"] == "seed 0"
    assert format_mean_sd(out["vae"]["bce"]) == "80.00 (n=1)"


def test_nan_propagates() -> None:
    out = aggregate_seeds([{"a": 1.0}, {"a": float("nan")}])
    assert math.isnan(out["a"]["mean"]) and math.isnan(out["a"]["sd"]) and out["a"]["n"] == 2


def test_structure_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match=r"vae.*\['kl'\]"):
        aggregate_seeds([{"vae": {"bce": 1, "kl": 2}}, {"vae": {"bce": 1}}])
    with pytest.raises(ValueError, match="vae"):
        aggregate_seeds([{"vae": {"bce": 1}}, {"vae": 3}])
    with pytest.raises(ValueError, match="x is a number in some runs"):
        aggregate_seeds([{"x": 1}, {"x": None}])
    with pytest.raises(ValueError, match="at least one"):
        aggregate_seeds([])


def test_format_mean_sd() -> None:
    assert format_mean_sd({"mean": 104.5321, "sd": 0.2149, "n": 3}) == "104.53 ± 0.21"
    assert format_mean_sd({"mean": 55.0, "sd": 1.26, "n": 5}, digits=1) == "55.0 ± 1.3"
    assert is_summary({"mean": 1.0, "sd": 0.0, "n": 2}) and not is_summary({"mean": 1.0})
    with pytest.raises(ValueError, match="aggregate_seeds"):
        format_mean_sd({"mean": 1.0})

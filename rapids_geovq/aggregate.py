"""Aggregate metrics of runs that differ only in their seed.

Each run's metrics are a nested mapping of the same shape (e.g. a pipeline's
``metrics.json``). :func:`aggregate_seeds` replaces every numeric leaf by its mean,
sample standard deviation and count over the runs; :func:`format_mean_sd` writes
one such summary as ``"mean ± sd"`` for a table.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate_seeds", "format_mean_sd", "is_summary"]

_SUMMARY_KEYS = frozenset({"mean", "sd", "n"})


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a flag is not a measurement to average.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _path(keys: tuple) -> str:
    return ".".join(str(k) for k in keys) or "<top level>"


def _aggregate(values: list[Any], keys: tuple, strict: bool) -> tuple[bool, Any]:
    """(keep, aggregated) for one position of the nested structure across runs."""
    if all(isinstance(v, Mapping) for v in values):
        first = list(values[0])
        for i, v in enumerate(values[1:], start=1):
            if set(v) != set(first):
                missing = sorted(map(str, set(first) ^ set(v)))
                raise ValueError(f"run {i} differs from run 0 at {_path(keys)}: keys {missing} are in "
                                 "one but not the other; aggregate only runs of the same configuration")
        out = {}
        for key in first:
            keep, agg = _aggregate([v[key] for v in values], keys + (key,), strict)
            if keep:
                out[key] = agg
        return True, out
    if any(isinstance(v, Mapping) for v in values):
        raise ValueError(f"{_path(keys)} is a mapping in some runs and not in others; "
                         "aggregate only runs of the same configuration")
    numeric = [_is_number(v) for v in values]
    if all(numeric):
        xs = [float(v) for v in values]
        n = len(xs)
        mean = math.fsum(xs) / n
        sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
        return True, {"mean": mean, "sd": sd, "n": n}
    if any(numeric):
        raise ValueError(f"{_path(keys)} is a number in some runs and not in others ({values!r}); "
                         "fix the runs' metrics so the leaf has one type")
    if all(v == values[0] for v in values[1:]):
        return True, values[0]
    if strict:
        raise ValueError(f"non-numeric leaf {_path(keys)} differs between runs: {values!r}")
    return False, None


def aggregate_seeds(runs: Sequence[Mapping[str, Any]], *, strict: bool = False) -> dict[str, Any]:
    """Mean, sample standard deviation and count of every numeric leaf across runs.

    Parameters
    ----------
    runs : sequence of mapping
        One nested metrics mapping per seed, all with the same keys at every level.
        Numeric leaves are Python or NumPy reals (``bool`` is not numeric); NaN
        propagates into the mean and sd.
    strict : bool
        If true, a non-numeric leaf (string, list, None, bool, ...) that differs
        between runs is an error; by default it is left out of the result.

    Returns
    -------
    dict
        The same nesting; each numeric leaf becomes ``{"mean": float, "sd": float,
        "n": int}`` with ``sd`` the sample standard deviation (``ddof=1``), which is
        NaN for a single run (one seed says nothing about the spread). Non-numeric
        leaves equal in every run are kept as they are; lists count as non-numeric
        leaves, compared whole.

    Raises
    ------
    ValueError
        If ``runs`` is empty, or the runs' structures differ (the message names the
        first differing key path).
    """
    if len(runs) == 0:
        raise ValueError("aggregate_seeds needs at least one run's metrics")
    if not all(isinstance(r, Mapping) for r in runs):
        raise ValueError("every run's metrics must be a mapping (e.g. a loaded metrics.json)")
    return _aggregate(list(runs), (), strict)[1]


def is_summary(value: Any) -> bool:
    """Whether ``value`` is one leaf summary produced by :func:`aggregate_seeds`."""
    return isinstance(value, Mapping) and set(value) == _SUMMARY_KEYS


def format_mean_sd(summary: Mapping[str, Any], *, digits: int = 2) -> str:
    """``"mean ± sd"`` with ``digits`` decimals, e.g. ``"104.53 ± 0.21"``.

    With one run (``n == 1``, NaN sd) the result is ``"mean (n=1)"``, so a table never
    shows a spread that was not measured.

    Parameters
    ----------
    summary : mapping
        A leaf of :func:`aggregate_seeds`: ``{"mean", "sd", "n"}``.
    digits : int
        Decimals for both numbers.

    Raises
    ------
    ValueError
        If ``summary`` is not such a leaf.
    """
    if not is_summary(summary):
        raise ValueError(f"expected a {{'mean', 'sd', 'n'}} leaf of aggregate_seeds, got {summary!r}")
    mean, sd, n = summary["mean"], summary["sd"], summary["n"]
    if n < 2:
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"

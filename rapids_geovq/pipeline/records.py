"""Cached, resumable stages: a stage runs unless a record proves its artifacts are current and intact.

Each stage writes its artifacts into the run directory and a record ``stages/<name>.json`` with a
key (a hash of the stage's settings, its code version and the keys of the stages it reads), the
SHA-256 of every artifact it wrote and of its result. A stage is skipped only when its record has
the same key, every artifact is present with the recorded digest, the result matches its digest,
and the stage's own ``check`` (the geodesic stage verifies its shards) passes. Anything else (a
missing, truncated or corrupted artifact, a record that is not JSON, has the wrong shape or was
edited) is reported and the stage runs again, so a killed or damaged run always resumes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..common.resources import AnonPeak, children_peak_rss_bytes, peak_rss_bytes, reset_peak_rss
from ..data import file_sha256
from .layout import RunLayout

log = logging.getLogger(__name__)

#: Per-stage code versions: bump a stage's entry when its computation changes, so its old
#: artifacts (and those of the stages that read them) are not reused. Unlisted stages are at 1.
STAGE_VERSIONS = {"graph": 2, "quantize": 3, "geodesic": 2, "kmeans": 3}


def jsonable(o):
    """``json.dumps`` default for NumPy scalars and arrays."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o)}")


def atomic_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=jsonable))
    os.replace(tmp, path)


def save_npz(path: Path, **arrays) -> None:
    """np.savez written atomically (a killed job never leaves a half-written artifact)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def result_digest(result) -> str:
    """SHA-256 of a stage result's canonical JSON."""
    return hashlib.sha256(json.dumps(result, sort_keys=True, default=jsonable).encode()).hexdigest()


class StaleRecord(Exception):
    """Why a stage record cannot vouch for its artifacts (the stage then runs again)."""


class StageCache:
    """The stage records of one run directory.

    Parameters
    ----------
    layout : RunLayout
    """

    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.keys: dict[str, str] = {}
        self.records: dict[str, dict] = {}

    def key(self, name: str, settings: dict, inputs: list[str]) -> str:
        blob = json.dumps({"stage": name, "version": STAGE_VERSIONS.get(name, 1), "settings": settings,
                           "inputs": {i: self.keys[i] for i in inputs}}, sort_keys=True, default=jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def result(self, name: str):
        """The result of a stage run or skipped in this run."""
        return self.records[name]["result"]

    def _valid_record(self, name: str, key: str, outputs: list[Path]) -> dict:
        """The record of ``name`` if it vouches for current, intact artifacts; else StaleRecord."""
        path = self.layout.record(name)
        if not path.exists():
            raise StaleRecord("no record")
        try:
            record = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
            raise StaleRecord(f"its record {path} is not readable JSON ({type(exc).__name__})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("digests"), dict) or "result" not in record:
            raise StaleRecord(f"its record {path} does not have the shape of a stage record")
        if record.get("key") != key:
            raise StaleRecord("its settings or inputs changed")
        if record.get("result_digest") != result_digest(record["result"]):
            raise StaleRecord(f"the result in its record {path} was changed after the stage wrote it")
        for out in outputs:
            rel = self.layout.relative(out)
            if not out.exists():
                raise StaleRecord(f"{out} is missing")
            if record["digests"].get(rel) != file_sha256(out):
                raise StaleRecord(f"{out} is damaged or was changed (its SHA-256 differs from the record's)")
        return record

    def stage(self, name: str, settings: dict, inputs: list[str], outputs: list[Path],
              fn: Callable[[], dict], *, uses_workers: bool = False,
              check: Callable[[], None] | None = None) -> dict:
        """Run ``fn`` unless a valid record with the same key exists; return its result.

        ``settings`` are the stage's own parameters, ``inputs`` the names of the stages it reads.
        ``fn`` writes ``outputs`` (paths in the run directory) and returns a JSON-able dict.
        ``uses_workers`` records the peak RSS of worker processes (the kernel keeps one running
        maximum over all children, so it is only meaningful for the stage that starts them).
        ``check`` runs before a stage is skipped; if it raises, the stage is run again.
        """
        key = self.key(name, settings, inputs)
        self.keys[name] = key
        record_path = self.layout.record(name)
        try:
            record = self._valid_record(name, key, outputs)
            if check is not None:
                try:
                    check()
                except Exception as exc:  # a damaged artifact: recompute rather than trust it
                    raise StaleRecord(f"its artifacts fail their check ({exc})") from exc
        except StaleRecord as why:
            if str(why) != "no record":
                log.warning("stage %s: %s; running it again", name, why)
        else:
            log.info("stage %-14s up to date (key %s), skipped", name, key)
            record["skipped"] = True
            self.records[name] = record
            return record["result"]
        # The old record must not vouch for outputs this run is about to overwrite.
        record_path.unlink(missing_ok=True)
        log.info("stage %-14s running", name)
        reset_peak_rss()
        t0 = time.perf_counter()
        from .disk import full_disk_names

        with AnonPeak() as anon, full_disk_names(self.layout.root, f"stage {name}"):
            result = fn()
        result = json.loads(json.dumps(result, default=jsonable))  # as it will read back
        record = {"key": key, "stage": name, "seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3), "peak_anon_gib": round(anon.peak / 2**30, 3),
                  "children_peak_rss_gib": round(children_peak_rss_bytes() / 2**30, 3) if uses_workers else None,
                  "outputs": [self.layout.relative(o) for o in outputs],
                  "digests": {self.layout.relative(o): file_sha256(o) for o in outputs},
                  "result": result, "result_digest": result_digest(result)}
        atomic_json(record_path, record)
        log.info("stage %-14s done in %.1f s (peak RSS %.2f GiB, of it allocated %.2f GiB)", name,
                 record["seconds"], record["peak_rss_gib"], record["peak_anon_gib"])
        self.records[name] = record
        return result

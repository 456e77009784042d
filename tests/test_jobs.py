"""Jobs beyond one run: several seeds aggregated, the sweep over K and the subsample study, and the
on-demand storage behind the same front door."""
import json
from pathlib import Path

import numpy as np
import pytest

from rapids_geovq.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["progress=false", "data.n_train=500", "data.n_test=200", "kmeans.n_clusters=8", "kmeans.n_init=1",
        "vae.epochs=1", "vqvae.epochs=1", "prior.epochs=1", "geodesic.shard_rows=250", "sequences.kinds=[dataset]",
        "eval.iwae_k=20", "eval.elbo_samples=2"]


pytestmark = pytest.mark.mnist


def test_seeds_are_runs_of_their_own_reported_as_mean_and_sd(tmp_path, capsys):
    run = tmp_path / "seeds"
    args = ["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run}", *TINY, "seeds=[0,1]", "sweep.n_codes=[4,8]",
            "sweep.vqvae=false", "subsample.sizes=[250]", "subsample.seeds=[0,1]"]
    assert main(args) == 0
    assert "±" in capsys.readouterr().out  # the summary printed is the mean ± sd over seeds
    top = json.loads((run / "metrics.json").read_text())
    per = {s: json.loads((run / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)}
    # every seed's stages used its seed
    import yaml

    for s in (0, 1):
        cfg = yaml.safe_load((run / f"seed_{s}" / "config.yaml").read_text())
        assert all(cfg[sec]["seed"] == s for sec in ("vae", "vqvae", "vqvae_strong", "prior", "kmeans", "eval"))
    # the aggregate is the mean and sample sd over the seeds
    a = top["aggregate"]["table1"]["geovq"]["total"]
    vals = [per[s]["table1"]["geovq"]["total"] for s in (0, 1)]
    assert a["n"] == 2 and a["mean"] == pytest.approx(np.mean(vals)) and a["sd"] == pytest.approx(np.std(vals, ddof=1))
    # the sweep and the subsample study ran on the first seed only
    assert set(top["sweep"]) == {"4", "8"} and set(top["subsample"]["250"]) == {"0", "1"}
    assert not per[1]["sweep"] and per[0]["sweep"]
    report = (run / "report.md").read_text()
    assert "mean ± sd over seeds" in report and "Rate-distortion" in report and "fitting on every latent" in report
    # the reading states the sweep's and the subsample study's outcome in numbers
    assert "Geo-VQ minus Euclidean-VQ" in report and "at K = 4" in report and "at K = 8" in report
    assert "Codebooks fitted on random subsamples" in report and "(250)" in report
    for name in ("rate_distortion.png", "purity_vs_k.png", "geodesic_map.png"):
        assert (run / "figures" / name).exists()
    # resumable: a second call recomputes nothing
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("stages/*.json")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in run.rglob("stages/*.json")}


def test_on_demand_storage_gives_the_dense_jobs_codebook(tmp_path):
    common = [*TINY, "sequences.kinds=[dataset]"]
    dense, od = tmp_path / "dense", tmp_path / "od"
    assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={dense}", *common, "geodesic.storage=dense"]) == 0
    assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={od}", *common, "geodesic.storage=on_demand",
                 "kmeans.update_candidates=null", "kmeans.swap_near=null", "kmeans.swap_far=null"]) == 0
    assert not (od / "geodesic").exists() or not list((od / "geodesic").iterdir())  # no matrix written
    with np.load(dense / "artifacts/codebook.npz") as a, np.load(od / "artifacts/codebook.npz") as b:
        np.testing.assert_array_equal(a["medoid_indices"], b["medoid_indices"])
        np.testing.assert_array_equal(a["dist_to_codes"], b["dist_to_codes"])
    md, mo = (json.loads((d / "metrics.json").read_text()) for d in (dense, od))
    assert md["table1"]["geovq"] == mo["table1"]["geovq"]
    assert mo["geodesic_kmeans"]["storage"] == "on_demand"

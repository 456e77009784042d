"""The command line end to end: the quick job on real MNIST, the codebook command, clear errors."""
import json
from pathlib import Path

import numpy as np
import pytest

from rapids_geovq.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.mnist
def test_quick_job_end_to_end_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "quick"
    overrides = [f"run_dir={run_dir}", "progress=false", "data.n_train=1200", "data.n_test=400",
                 "kmeans.n_clusters=16", "vae.epochs=1", "vqvae.epochs=1", "prior.epochs=1",
                 "geodesic.shard_rows=300"]
    assert main(["run", str(ROOT / "jobs/quick.yaml"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "| VAE: -ELBO" in out and "Geo-VQ" in out and "BCE + rate" in out
    for name in ("config.yaml", "metrics.json", "report.md", "run.log", "checkpoints/vae.pt",
                 "checkpoints/vqvae.pt", "checkpoints/prior_dataset.pt", "checkpoints/prior_random_walk.pt",
                 "geodesic/manifest.json", "artifacts/codebook.npz", "figures/reconstructions.png",
                 "figures/ar_samples_dataset.png", "figures/ar_samples_random_walk.png", "figures/codebook.png"):
        assert (run_dir / name).exists(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["n_test"] == 400 and m["n_train"] == 1200
    for model in ("vae", "vqvae", "geovq", "euclidean_vq"):
        assert all(np.isfinite(v) and v > 0 for v in m["table1_sums"][model].values())
    assert m["table1_sums"]["vae"]["total"] == pytest.approx(
        m["table1_sums"]["vae"]["bce"] + m["table1_sums"]["vae"]["kl"], rel=1e-6)
    for kind in ("dataset", "random_walk"):
        nll = m["ar_nll_per_token"][kind]["nll_per_token"]
        assert 0 < nll < 2 * np.log(16)
    with np.load(run_dir / "artifacts/codebook.npz") as f:
        assert f["codebook"].shape == (16, 20) and f["dist_to_codes"].shape == (1200, 16)
    report = (run_dir / "report.md").read_text()
    assert "figures/reconstructions.png" in report and "Table 1" in report

    # a second run finds every stage up to date and recomputes nothing
    first = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir()}
    assert main(["run", str(ROOT / "jobs/quick.yaml"), *overrides]) == 0
    second = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir()}
    assert first == second
    log = (run_dir / "run.log").read_text()
    assert "stage geodesic       up to date" in log

    # changing a k-means setting reruns k-means and what follows, not the VAE or the geodesic matrix
    assert main(["run", str(ROOT / "jobs/quick.yaml"), *overrides, "kmeans.n_init=1"]) == 0
    third = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir()}
    assert third["vae.json"] == first["vae.json"] and third["geodesic.json"] == first["geodesic.json"]
    assert third["kmeans.json"] != first["kmeans.json"]

    # a shard lost after the run finished is noticed and the geodesic stage runs again
    (run_dir / "geodesic" / "rows_0000300_0000600.npy").unlink()
    assert main(["run", str(ROOT / "jobs/quick.yaml"), *overrides, "kmeans.n_init=1"]) == 0
    fourth = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir()}
    assert fourth["geodesic.json"] != third["geodesic.json"] and fourth["vae.json"] == first["vae.json"]
    assert "fail their check" in (run_dir / "run.log").read_text()

    # the same job on a Dask LocalCluster (2 worker processes) gives identical shards and codebook
    import shutil

    dask_dir = tmp_path / "quick_dask"
    shutil.copytree(run_dir, dask_dir)
    shutil.rmtree(dask_dir / "geodesic")
    for stage in ("geodesic", "kmeans"):
        (dask_dir / "stages" / f"{stage}.json").unlink()
    dask_overrides = [o for o in overrides if not o.startswith("run_dir=")]
    assert main(["run", str(ROOT / "jobs/quick.yaml"), *dask_overrides, f"run_dir={dask_dir}", "kmeans.n_init=1",
                 "geodesic.cluster=local", "geodesic.n_workers=2"]) == 0
    a = json.loads((run_dir / "geodesic" / "manifest.json").read_text())
    b = json.loads((dask_dir / "geodesic" / "manifest.json").read_text())
    assert a["shards"] == b["shards"]  # same files, same CRC-32s
    with np.load(run_dir / "artifacts/codebook.npz") as f, np.load(dask_dir / "artifacts/codebook.npz") as g:
        np.testing.assert_array_equal(f["medoid_indices"], g["medoid_indices"])
        np.testing.assert_array_equal(f["labels"], g["labels"])
    assert json.loads((dask_dir / "stages" / "kmeans.json").read_text())["result"]["cluster"] == "local"


def test_codebook_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Z = np.vstack([rng.normal(size=(150, 4)), rng.normal(size=(150, 4)) + 6]).astype(np.float32)
    np.save(tmp_path / "Z.npy", Z)
    out = tmp_path / "cb.npz"
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--k", "8", "--clusters", "5",
                 "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["codebook"].shape == (5, 4) and f["labels"].shape == (300,)
        np.testing.assert_array_equal(f["codebook"], Z[f["medoid_indices"]])
    # the same through row shards on disk gives the same codebook
    out2 = tmp_path / "cb2.npz"
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--k", "8", "--clusters", "5",
                 "--out", str(out2), "--work-dir", str(tmp_path / "shards"), "--workers", "1"]) == 0
    # and on a Dask LocalCluster with two worker processes
    out3 = tmp_path / "cb3.npz"
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--k", "8", "--clusters", "5",
                 "--out", str(out3), "--work-dir", str(tmp_path / "shards3"), "--cluster", "local",
                 "--workers", "2"]) == 0
    with np.load(out) as a, np.load(out2) as b, np.load(out3) as c:
        np.testing.assert_array_equal(a["medoid_indices"], b["medoid_indices"])
        np.testing.assert_array_equal(a["medoid_indices"], c["medoid_indices"])
        np.testing.assert_array_equal(a["labels"], c["labels"])


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["run", str(ROOT / "jobs/quick.yaml"), "kmeans.n_cluster=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key" in err and "n_clusters" in err and "Traceback" not in err

    Z = np.zeros((20, 3))
    Z[4, 1] = np.nan
    np.save(tmp_path / "Z.npy", Z)
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--clusters", "3", "--k", "3"]) == 2
    assert "NaN" in capsys.readouterr().err

    np.save(tmp_path / "small.npy", np.random.default_rng(0).normal(size=(10, 2)))
    assert main(["codebook", "--latents", str(tmp_path / "small.npy"), "--clusters", "11", "--k", "3"]) == 2
    assert "more than the 10 latents" in capsys.readouterr().err

    np.save(tmp_path / "flat.npy", np.arange(10.0))
    assert main(["codebook", "--latents", str(tmp_path / "flat.npy")]) == 2
    assert "must be 2-D" in capsys.readouterr().err

    np.savez(tmp_path / "z.npz", Z=np.zeros((5, 2)))
    assert main(["codebook", "--latents", str(tmp_path / "z.npz")]) == 2
    assert ".npz archive" in capsys.readouterr().err
    assert main(["codebook", "--latents", str(tmp_path / "small.npy"), "--clusters", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err

    assert main(["codebook", "--latents", str(tmp_path / "missing.npy")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.skipif(__import__("rapids_geovq.gpu.device", fromlist=["gpu_count"]).gpu_count() > 0,
                    reason="a GPU is present")
def test_gpu_backend_without_gpu_is_one_clear_line(tmp_path, capsys):
    assert main(["run", str(ROOT / "jobs/quick.yaml"), "backend=cupy", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "backend=cupy needs" in err and "backend=numpy" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["run.log"]  # refused before any work
    np.save(tmp_path / "Z.npy", np.random.default_rng(0).normal(size=(40, 3)))
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--k", "3", "--clusters", "3",
                 "--backend", "rapids"]) == 2
    assert "backend=rapids needs" in capsys.readouterr().err


def test_a_path_method_the_backend_lacks_stops_before_any_work(tmp_path, capsys):
    # cuGraph is a RAPIDS method: refused at start-up, not inside the geodesic stage after the VAE
    assert main(["run", str(ROOT / "jobs/quick.yaml"), "backend=numpy", "geodesic.method=cugraph",
                 f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "geodesic.method=cugraph" in err and "backend=rapids" in err
    assert not (tmp_path / "run").exists()  # refused while reading the job, before any work

"""Faults a new user runs into: directed graphs, bad distances, damaged run directories, a full
disk, two runs on one directory, settings that cannot work. Each ends in a clear error or a
recomputation, never in a silent wrong result or a traceback."""
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import kneighbors_graph

from rapids_geovq import GeodesicKMeans, GeodesicQuantizer, geodesic_matrix, geodesic_row_shards, knn_graph
from rapids_geovq.cli import main
from rapids_geovq.common.resources import ResourceError

ROOT = Path(__file__).resolve().parents[1]


# -- 1. directed input ------------------------------------------------------------------------

def test_directed_knn_graph_is_symmetrised_with_a_warning(tmp_path, caplog):
    X = np.random.default_rng(0).normal(size=(300, 4))
    G = kneighbors_graph(X, 20, mode="distance")  # directed: j among i's neighbours, not always back
    assert (G != G.T).nnz > 0
    undirected = dijkstra(G, directed=False).astype(np.float32)
    with caplog.at_level("WARNING"):
        D = geodesic_matrix(G, backend="numpy")
    assert "not symmetric" in caplog.text
    np.testing.assert_array_equal(D, undirected)
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=64, backend="numpy", progress=False)
    np.testing.assert_array_equal(S.to_array(), undirected)


def test_kmeans_refuses_a_non_symmetric_matrix():
    X = np.random.default_rng(1).normal(size=(200, 3))
    G = kneighbors_graph(X, 30, mode="distance").tocsr()
    D = dijkstra(G, directed=True)
    assert np.isfinite(D).all() and not np.allclose(D, D.T)  # reachable both ways, but directed
    with pytest.raises(ValueError, match=r"D is not symmetric: D\[\d+, \d+\] = .* but D\[\d+, \d+\]"):
        GeodesicKMeans(6, random_state=0).fit(D.astype(np.float32))
    # the symmetric matrix of the same points is accepted
    GeodesicKMeans(6, random_state=0).fit(geodesic_matrix(G, backend="numpy"))


# -- 2. every entry of D is checked -------------------------------------------------------------

@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-1.0, "negative")])
def test_a_bad_entry_anywhere_is_named(value, word):
    X = np.random.default_rng(2).normal(size=(250, 3))
    D = geodesic_matrix(knn_graph(X, 6), backend="numpy")
    rng = np.random.default_rng(3)
    for _ in range(3):  # entries the old spot check (8 evenly spaced rows) never looked at
        i, j = rng.integers(0, 250, 2)
        if i in np.linspace(0, 249, 8).astype(int):
            continue
        bad = D.copy()
        bad[i, j] = value
        bad[j, i] = value
        with pytest.raises(ValueError, match=rf"D\[{min(i, j)}, {max(i, j)}\] is {word}.*row {min(i, j)} is the first bad row"):
            GeodesicKMeans(5, random_state=int(i)).fit(bad)


def test_a_nan_in_a_seeded_row_is_named_not_an_overflow():
    X = np.random.default_rng(4).normal(size=(100, 3))
    D = geodesic_matrix(knn_graph(X, 6), backend="numpy")
    D[:, 40] = np.nan
    D[40, :] = np.nan
    with pytest.raises(ValueError, match="is NaN"):
        GeodesicKMeans(4, random_state=0).fit(D)


# -- 3. damaged run directories ------------------------------------------------------------------

RUN = ["progress=false", "data.n_train=600", "data.n_test=200", "kmeans.n_clusters=8", "vae.epochs=1",
       "vqvae.epochs=1", "prior.epochs=1", "geodesic.shard_rows=300", "sequences.kinds=[dataset]"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):  # used by tests marked mnist
    run_dir = tmp_path_factory.mktemp("runs") / "small"
    assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run_dir}", *RUN]) == 0
    return run_dir


def _rerun(run_dir) -> tuple[int, dict]:
    rc = main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run_dir}", *RUN])
    stamps = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").iterdir()}
    return rc, stamps


@pytest.mark.mnist
@pytest.mark.parametrize("artifact, stage", [("artifacts/codebook.npz", "kmeans.json"),
                                             ("artifacts/latents.npz", "latents.json"),
                                             ("artifacts/knn_graph.npz", "graph.json")])
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_artifact_is_reported_and_recomputed(small_run, artifact, stage, damage, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in (small_run / "stages").iterdir()}
    metrics = json.loads((small_run / "metrics.json").read_text())
    path = small_run / artifact
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    rc, after = _rerun(small_run)
    assert rc == 0
    assert after[stage] != before[stage]  # that stage ran again
    assert after["vae.json"] == before["vae.json"] or stage == "vae.json"
    assert "is damaged or was changed" in (small_run / "run.log").read_text()
    again = json.loads((small_run / "metrics.json").read_text())
    assert again["table1_sums"] == metrics["table1_sums"]  # the same results, recomputed


@pytest.mark.mnist
@pytest.mark.parametrize("record", [b"\xff\xfe\x00 not text", b"[]", b'{"key": 3}', b"{"])
def test_unreadable_or_misshapen_record_is_treated_as_absent(small_run, record):
    (small_run / "stages" / "euclidean.json").write_bytes(record)
    rc, _ = _rerun(small_run)
    assert rc == 0
    assert json.loads((small_run / "stages" / "euclidean.json").read_text())["stage"] == "euclidean"


@pytest.mark.mnist
def test_an_edited_result_does_not_reach_the_metrics(small_run):
    rec_path = small_run / "stages" / "quantize.json"
    rec = json.loads(rec_path.read_text())
    true_bce = rec["result"]["geo"]["bce_sum"]
    rec["result"]["geo"]["bce_sum"] = 1.0  # a hand edit, key and digests untouched
    rec_path.write_text(json.dumps(rec))
    assert _rerun(small_run)[0] == 0
    assert "was changed after the stage wrote it" in (small_run / "run.log").read_text()
    m = json.loads((small_run / "metrics.json").read_text())
    assert m["table1_sums"]["geovq"]["bce"] == true_bce


# -- 4. a full disk while shards are written ------------------------------------------------------

def test_full_disk_while_writing_a_shard_is_a_clear_error_and_resumes(tmp_path, monkeypatch):
    from rapids_geovq.geodesic import shards

    G = knn_graph(np.random.default_rng(5).normal(size=(120, 3)), 5)
    calls = {"n": 0}
    real = os.posix_fallocate

    def fill_up(fd, offset, length):
        calls["n"] += 1
        if calls["n"] == 2:  # the second shard finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, offset, length)

    monkeypatch.setattr(shards.os, "posix_fallocate", fill_up)
    with pytest.raises(ResourceError, match=r"the disk holding .*geo is full: a geodesic shard needs .* free"):
        geodesic_row_shards(G, tmp_path / "geo", shard_rows=40, n_workers=1, backend="numpy", progress=False)
    assert not list((tmp_path / "geo").glob("*.tmp"))  # no half-written file left
    written = sorted(p.name for p in (tmp_path / "geo").glob("rows_*.npy"))
    assert written  # the first shard is kept
    monkeypatch.undo()
    S = geodesic_row_shards(G, tmp_path / "geo", shard_rows=40, n_workers=1, backend="numpy", progress=False)
    np.testing.assert_array_equal(S.to_array(), dijkstra(G).astype(np.float32))


@pytest.mark.mnist
def test_whole_run_disk_estimate_refuses_before_the_first_stage(tmp_path, monkeypatch, capsys):
    from rapids_geovq.common import resources

    Usage = type("Usage", (), {})
    usage = Usage()
    usage.free = 3 << 20  # 3 MiB: less than the checkpoints, artifacts and figures of any run
    monkeypatch.setattr(resources.shutil, "disk_usage", lambda path: usage)
    run_dir = tmp_path / "run"
    assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run_dir}", *RUN]) == 2
    err = capsys.readouterr().err
    assert f"on the disk of {run_dir}" in err and "checkpoints" in err and "figures" in err
    assert not list((run_dir / "stages").iterdir())  # nothing was computed


def test_disk_filling_while_writing_figures_names_the_run_directory(tmp_path):
    from rapids_geovq.pipeline.disk import full_disk_names

    with pytest.raises(ResourceError, match=rf"the disk holding {tmp_path} filled up while writing figures"):
        with full_disk_names(tmp_path, "figures"):
            raise OSError(errno.ENOSPC, "No space left on device")


# -- 5. one writer per run directory ----------------------------------------------------------------

def test_second_run_on_a_directory_in_use_stops_at_once(tmp_path, capsys):
    from rapids_geovq.pipeline.context import RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = RunLock(run_dir / ".lock")
    holder.acquire()
    try:
        assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run_dir}", *RUN]) == 2
        err = capsys.readouterr().err
        assert f"run directory {run_dir} is in use by process {os.getpid()}" in err
    finally:
        holder.release()


def test_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    from rapids_geovq.pipeline.context import RunLock

    lock = tmp_path / ".lock"
    code = textwrap.dedent(f"""
        import os
        from rapids_geovq.pipeline.context import RunLock
        RunLock({str(lock)!r}).acquire()
        os._exit(9)  # dies holding it, as kill -9 would leave it
    """)
    subprocess.run([sys.executable, "-c", code], check=False)
    assert "process" in lock.read_text()  # the dead holder's note is still there
    taker = RunLock(lock)
    taker.acquire()  # the kernel released the dead process's lock
    assert str(os.getpid()) in lock.read_text()
    taker.release()


# -- 6. everything checked before the first stage ---------------------------------------------------

@pytest.mark.mnist
@pytest.mark.parametrize("override, message", [
    ("kmeans.n_clusters=70000", "kmeans.n_clusters=70000 is more than the 60000 training images"),
    ("geodesic.cluster=nonsense", "geodesic.cluster must be one of threads, local, local-cuda"),
    ("device=tpu", "device must be auto, cpu, cuda or cuda:N"),
    ("run_dir=", "run_dir must name a directory"),
])
def test_impossible_settings_fail_before_any_stage(tmp_path, capsys, override, message):
    run_dir = tmp_path / "run"
    args = [a for a in RUN if not a.startswith("data.n_train") and not a.startswith("kmeans.n_clusters")]
    rc = main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run_dir}", *args, "data.n_train=null", override])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (run_dir / "stages").exists() or not list((run_dir / "stages").iterdir())


# -- 7. smaller ones -----------------------------------------------------------------------------------

def test_disconnected_graph_error_names_real_settings():
    from rapids_geovq import DisconnectedGraphError

    X = np.vstack([np.zeros((20, 2)), np.full((20, 2), 100.0)]) + np.random.default_rng(6).normal(size=(40, 2))
    with pytest.raises(DisconnectedGraphError) as info:
        knn_graph(X, 3, disconnected="error")
    msg = str(info.value)
    assert "graph.disconnected=repair" in msg and "--disconnected repair" in msg
    assert "geodesic.disconnected" not in msg


def test_quantizers_code_a_single_latent_and_refuse_bad_medoids():
    from rapids_geovq import EuclideanQuantizer

    Z = np.random.default_rng(7).normal(size=(80, 3))
    D = geodesic_matrix(knn_graph(Z, 5), backend="numpy")
    med = np.array([3, 40, 77])
    q = GeodesicQuantizer(Z, med, D[:, med], k=5)
    assert q.encode(Z[:1] + 0.01).shape == (1,)
    eq = EuclideanQuantizer(3, random_state=0).fit(Z)
    assert eq.encode(Z[5:6]).shape == (1,)
    with pytest.raises(ValueError, match=r"medoid_indices must index the 80 training latents \(0..79\)"):
        GeodesicQuantizer(Z, np.array([3, 80, 5]), D[:, [3, 0, 5]], k=5)
    with pytest.raises(ValueError, match="codes must lie in"):
        q.decode([0, 3])


def test_idx_labels_outside_the_ten_classes_are_refused(tmp_path):
    from rapids_geovq.data import DataError, load_idx_dir

    def idx(path, arr, code):
        header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        path.write_bytes(header + arr.astype(">u1").tobytes())

    rng = np.random.default_rng(8)
    for split, n in (("train", 30), ("t10k", 10)):
        idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), 0x08)
        labels = rng.integers(0, 10, n)
        if split == "train":
            labels[7] = 12
        idx(tmp_path / f"{split}-labels-idx1-ubyte", labels, 0x08)
    with pytest.raises(DataError, match=r"1 labels lie outside the 10 classes 0-9 \(first at index 7: 12\)"):
        load_idx_dir(tmp_path)


def test_codebook_out_that_cannot_be_written_fails_before_computing(tmp_path, capsys):
    np.save(tmp_path / "Z.npy", np.random.default_rng(9).normal(size=(60, 3)))
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a directory")
    out = blocked / "cb.npz"
    assert main(["codebook", "--latents", str(tmp_path / "Z.npy"), "--k", "4", "--clusters", "3",
                 "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tmp.npz"))


# -- a Dask worker lost in the middle of k-medoids ----------------------------------------------

def _exit_worker_process():
    os._exit(1)


def _lose(client, worker) -> bool:
    """Kill ``worker``'s process and wait until the scheduler has let it go."""
    import time

    client.submit(_exit_worker_process, workers=[worker], allow_other_workers=False, pure=False)
    t0 = time.monotonic()
    while worker in client.scheduler_info()["workers"] and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    return worker not in client.scheduler_info()["workers"]


@pytest.mark.parametrize("when", ["medoid update", "swap phase", "swap phase, shards held where computed"])
def test_dask_worker_lost_during_kmedoids_gives_the_same_codebook(tmp_path, monkeypatch, caplog, when):
    """A worker dies holding the only copy of data the driver scattered (the cluster labels of a
    medoid update, or the swap phase's start state: Dask keeps a broadcast object on one worker
    once no task elsewhere needs it) and its shards: the tasks that needed it are cancelled, the
    driver sends the data again, shards Dask cannot recompute (computed on that worker from a plan
    lost with it) are re-opened from their files, and the fit ends with the medoids of a fit on
    threads."""
    from sklearn.datasets import make_blobs

    from rapids_geovq import load_row_shards
    from rapids_geovq.geodesic import kmeans as K
    from rapids_geovq.geodesic.engine import connect
    from rapids_geovq.geodesic.execution import Execution

    Z, _ = make_blobs(n_samples=2000, centers=10, n_features=4, cluster_std=2.0, random_state=3)
    geodesic_row_shards(knn_graph(Z, 8), tmp_path / "geo", shard_rows=400, n_workers=1, progress=False)
    kw = dict(n_init=2, random_state=2)
    ref = GeodesicKMeans(16, execution=Execution(backend="numpy", n_workers=2, block_rows=16), **kw).fit(
        load_row_shards(tmp_path / "geo"))
    lost = []
    if when.startswith("swap phase"):
        real = K.DenseSource.begin_swaps

        def lose_the_worker_holding_the_start_state(self, *args):
            ctx = real(self, *args)  # the phase's start state, scattered to the victim only
            if not lost:
                lost.append(_lose(self.engine.client, victim))
            return ctx

        monkeypatch.setattr(K.DenseSource, "begin_swaps", lose_the_worker_holding_the_start_state)
    with connect("local", 2) as eng, caplog.at_level("WARNING"):
        victim = eng.workers()[1]

        def scatter_to_the_victim_while_it_lives(obj, broadcast=True):
            alive = victim in eng.client.scheduler_info()["workers"]
            fut = eng.client.scatter([obj], workers=[victim] if alive else None, hash=False)[0]
            if when == "medoid update" and not lost:  # the first scatter: a medoid update's labels
                lost.append(_lose(eng.client, victim))
            return fut

        monkeypatch.setattr(eng, "scatter", scatter_to_the_victim_while_it_lives)
        if when.endswith("held where computed"):  # the search plan goes to the victim, and the shards
            D = geodesic_row_shards(knn_graph(Z, 8), tmp_path / "held", shard_rows=400, engine=eng, progress=False)
        else:
            D = load_row_shards(tmp_path / "geo")
        got = GeodesicKMeans(16, execution=Execution(backend="numpy", engine=eng, block_rows=300), **kw).fit(D)
    assert lost == [True]
    assert ("a Dask worker was lost during a medoid update" if when == "medoid update"
            else "a Dask worker was lost during the swap phase") in caplog.text
    if when.endswith("held where computed"):
        assert "re-opened" in caplog.text  # the victim's shards, from their files
    np.testing.assert_array_equal(got.medoid_indices_, ref.medoid_indices_)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    assert got.inertia_ == ref.inertia_


def test_dask_worker_lost_with_the_search_plan_gives_the_same_shards(tmp_path, monkeypatch, caplog):
    """The geodesic stage's plan (graph and row order) is scattered to the workers; a worker that
    dies holding its only copy cancels the shards waiting for it: the driver sends the plan again,
    those shards run on the workers left, and the matrix equals the one computed on threads."""
    from rapids_geovq import load_row_shards
    from rapids_geovq.geodesic.engine import connect

    Z = np.random.default_rng(4).normal(size=(1200, 4))
    G = knn_graph(Z, 8)
    want = geodesic_row_shards(G, tmp_path / "threads", shard_rows=200, n_workers=2, progress=False).to_array()
    with connect("local", 2) as eng, caplog.at_level("WARNING"):
        victim = eng.workers()[1]
        sent = []

        def scatter_to_the_victim_then_lose_it(obj, broadcast=True):
            alive = victim in eng.client.scheduler_info()["workers"]
            fut = eng.client.scatter([obj], workers=[victim] if alive else None, hash=False)[0]
            if not sent:
                _lose(eng.client, victim)
            sent.append(alive)
            return fut

        monkeypatch.setattr(eng, "scatter", scatter_to_the_victim_then_lose_it)
        geodesic_row_shards(G, tmp_path / "dask", shard_rows=200, engine=eng, progress=False)
    assert sent[:2] == [True, False]  # sent to the victim, which died; then again to a worker left
    assert "a Dask worker was lost with the search plan" in caplog.text
    np.testing.assert_array_equal(load_row_shards(tmp_path / "dask").to_array(), want)

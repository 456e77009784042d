"""Backend choice, zero-copy hand-off, and the GPU kNN search against the CPU reference."""
import importlib.util

import numpy as np
import pytest

from rapids_geovq.backends import BackendError, resolve_backend
from rapids_geovq.common.arrays import data_pointer, from_torch
from rapids_geovq.common.exact_knn import finish_knn
from rapids_geovq.geodesic.knn import exact_knn, knn_graph
from rapids_geovq.gpu.device import gpu_count
from rapids_geovq.gpu.knn import brute_knn

gpu = pytest.mark.gpu
has_gpu = gpu_count() > 0


def test_auto_resolves_to_what_runs_here():
    b = resolve_backend("auto")
    if not has_gpu:
        assert b.name == "numpy" and not b.gpu and b.path_solver().name == "numba"
    else:
        assert b.gpu and b.path_solver().name == "cuda"
    assert resolve_backend("numpy").name == "numpy"


@pytest.mark.skipif(has_gpu, reason="a GPU is present")
@pytest.mark.parametrize("name", ["cupy", "rapids"])
def test_gpu_backend_without_gpu_says_what_is_missing(name):
    with pytest.raises(BackendError, match=rf"backend={name} needs .*or use backend=numpy"):
        resolve_backend(name)


def test_auto_warns_when_a_visible_gpu_cannot_be_used(monkeypatch, caplog):
    """A GPU whose toolchain is broken makes auto fall back to numpy, and says why (not just "numpy")."""
    import rapids_geovq.backends as backends
    from rapids_geovq.backends.cupy_backend import CupyBackend
    from rapids_geovq.backends.rapids_backend import RapidsBackend

    monkeypatch.setattr(backends, "_gpu_visible", lambda: True)
    monkeypatch.setattr(RapidsBackend, "problem", classmethod(lambda cls: "backend=rapids needs cuml"))
    monkeypatch.setattr(CupyBackend, "problem", classmethod(lambda cls: "backend=cupy: numba-cuda is broken"))
    with caplog.at_level("WARNING", logger="rapids_geovq"):
        assert resolve_backend("auto").name == "numpy"
    assert "although a GPU is visible" in caplog.text and "numba-cuda is broken" in caplog.text


def test_kernel_compile_failure_names_numpy_and_the_fix(monkeypatch):
    """numba-cuda 0.30.4 under NumPy 2.5 fails at its first compilation: found before any stage."""
    numba_cuda = pytest.importorskip("numba.cuda")
    from rapids_geovq.gpu import device

    def broken(*a, **k):
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(numba_cuda, "compile_ptx", broken)
    device._kernel_compile_problem.cache_clear()  # answered once per process; ask afresh here
    msg = device._kernel_compile_problem()
    device._kernel_compile_problem.cache_clear()  # the next caller checks the real compiler again
    assert msg and "cannot compile a kernel with NumPy" in msg and "numpy<2.5" in msg and "row_stack" in msg


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of auto, numpy, cupy, rapids"):
        resolve_backend("tpu")


def test_from_torch_shares_memory_on_cpu():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    a = from_torch(t)
    assert isinstance(a, np.ndarray) and data_pointer(a) == data_pointer(t)
    t[0, 0] = 42.0
    assert a[0, 0] == 42.0  # one buffer, not a copy


def _points(seed, n=1500, d=5):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    Z[10:25] = Z[3]  # 16 copies of one point: more ties at distance 0 than candidates
    Z[100:103] = Z[200]
    return Z


def _brute(Z, k):
    D = np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    return np.array([np.lexsort((np.arange(len(d)), d))[:k] for d in D])


@pytest.mark.parametrize("seed", [0, 1])
def test_brute_knn_equals_cpu_reference_with_ties(seed):
    Z = _points(seed)
    d_cpu, i_cpu = exact_knn(Z, 6)
    d_xp, i_xp = brute_knn(Z, 6, xp=np, block_rows=400)  # the GPU code, run by NumPy
    assert np.array_equal(i_cpu, i_xp) and np.array_equal(d_cpu, d_xp)
    assert np.array_equal(i_cpu[:200], _brute(Z, 6)[:200])
    assert i_cpu[3].tolist() == [10, 11, 12, 13, 14, 15]  # lowest ids among the 16 tied copies


def test_lattice_ties_match_brute_force():
    rng = np.random.default_rng(2)
    Z = np.round(rng.normal(size=(700, 2)) * 3)  # integer lattice: ties at every distance
    want = _brute(Z, 8)
    assert np.array_equal(exact_knn(Z, 8)[1], want)
    assert np.array_equal(brute_knn(Z, 8, xp=np)[1], want)


def test_finish_knn_recomputes_rows_it_cannot_prove():
    Z = np.zeros((12, 2))
    Z[6:] = 1.0
    # candidates 7..9 of row 0 are wrong (farther than the duplicates 1..5); the approximate
    # distances claim nothing better is left out, so the row must be recomputed in full
    cand = np.array([[7, 8, 9]])
    d, i = finish_knn(Z[:1], Z, cand, np.zeros((1, 3)), 2, rel_err=1e-12, self_query=True)
    assert i.tolist() == [[1, 2]] and d.tolist() == [[0.0, 0.0]]


def test_brute_knn_rejects_bad_latents():
    Z = _points(0, n=300)
    Z[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 1 row\(s\) \(first: \[7\]\)"):
        brute_knn(Z, 3, xp=np)
    with pytest.raises(ValueError, match="k=300 neighbours requested but only 299"):
        brute_knn(_points(0, n=300), 300, xp=np)


def test_knn_graph_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        knn_graph(_points(0, n=300), 3, backend="faiss")


# --- on a GPU ------------------------------------------------------------------------------

@gpu
def test_cuda_tensor_reaches_knn_without_a_copy():
    torch = pytest.importorskip("torch")
    cupy = pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA torch")
    t = torch.from_numpy(_points(0).astype(np.float32)).cuda()
    a = from_torch(t)
    assert isinstance(a, cupy.ndarray) and data_pointer(a) == t.data_ptr()
    d, i = brute_knn(t, 6)
    d_ref, i_ref = exact_knn(t.cpu().numpy(), 6)
    assert np.array_equal(i, i_ref)
    g_gpu = knn_graph(t, 6, backend="cupy")
    g_cpu = knn_graph(t.cpu().numpy(), 6)
    assert (g_gpu != g_cpu).nnz == 0 and np.array_equal(g_gpu.indptr, g_cpu.indptr)


@gpu
@pytest.mark.skipif(importlib.util.find_spec("cuml") is None, reason="cuML not installed")
def test_cuml_knn_equals_cpu_reference():
    from rapids_geovq.gpu.knn import cuml_knn

    Z = _points(1)
    assert np.array_equal(cuml_knn(Z, 6)[1], exact_knn(Z, 6)[1])


def test_squared_norms_add_coordinates_in_order():
    from rapids_geovq.common.arrays import squared_norms

    rng = np.random.default_rng(5)
    diff = rng.normal(size=(200, 20)) * 10.0 ** rng.integers(-8, 8, size=(200, 20))
    want = np.empty(200)
    for i, row in enumerate(diff):
        s = row[0] * row[0]
        for x in row[1:]:
            s = s + x * x  # Python floats: IEEE double, one rounding per operation
        want[i] = s
    got = squared_norms(diff)
    assert np.array_equal(got, want)
    assert not np.array_equal(got, (diff * diff).sum(axis=1))  # NumPy's pairwise order differs

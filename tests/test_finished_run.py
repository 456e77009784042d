"""Using a finished run: encode new images and decode codes from the command line; the codebook
estimator and k-medoids behave as scikit-learn estimators."""
from pathlib import Path

import numpy as np
import pytest

from rapids_geovq.cli import main
from rapids_geovq.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", str(ROOT / "jobs/quick.yaml"), f"run_dir={run_dir}", "progress=false", "data.n_train=500",
                 "data.n_test=100", "kmeans.n_clusters=8", "kmeans.n_init=1", "vae.epochs=1", "vqvae.epochs=1",
                 "prior.epochs=1", "sequences.kinds=[dataset]", "eval.iwae_k=10", "eval.elbo_samples=1"]) == 0
    return run_dir


def _idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(">u1").tobytes())


@pytest.mark.mnist
def test_encode_images_gives_the_runs_geodesic_codes(run, tmp_path, capsys):
    from rapids_geovq import GeodesicCodebook
    from rapids_geovq.data import images_to_float
    from rapids_geovq.models.training import encode_means, load_checkpoint

    images = load_mnist().test_images[:50]
    np.save(tmp_path / "digits.npy", images)
    assert main(["encode", "--run", str(run), "--images", str(tmp_path / "digits.npy"),
                 "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    vae, _, _ = load_checkpoint(run / "checkpoints/vae.pt")
    cb = GeodesicCodebook.load(run / "artifacts/codebook.npz")
    np.testing.assert_array_equal(codes, cb.predict(encode_means(vae, images_to_float(images))))
    assert codes.shape == (50,) and codes.max() < 8
    # the same images as an IDX file and as a directory holding it
    _idx(tmp_path / "mine-images-idx3-ubyte", images)
    for src in (tmp_path / "mine-images-idx3-ubyte", tmp_path):
        assert main(["encode", "--run", str(run), "--images", str(src), "--out", str(tmp_path / "c2.npy")]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "c2.npy"), codes)
    # decode draws them
    assert main(["decode", "--run", str(run), "--codes", str(tmp_path / "codes.npy"),
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 1000


@pytest.mark.mnist
def test_encode_and_decode_refuse_what_they_cannot_use(run, tmp_path, capsys):
    import shutil

    np.save(tmp_path / "floats.npy", np.random.default_rng(0).random((3, 28, 28)))
    assert main(["encode", "--run", str(run), "--images", str(tmp_path / "floats.npy")]) == 2
    assert "expected uint8 images" in capsys.readouterr().err
    np.save(tmp_path / "bad_codes.npy", np.array([0, 9]))
    assert main(["decode", "--run", str(run), "--codes", str(tmp_path / "bad_codes.npy"),
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "codes must lie in [0, 8)" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "artifacts/codebook.npz").unlink()
    assert main(["encode", "--run", str(unfinished), "--images", str(tmp_path / "floats.npy")]) == 2
    err = capsys.readouterr().err
    assert "is unfinished" in err and f"rapids-geovq run {unfinished / 'config.yaml'}" in err
    older = tmp_path / "older"
    shutil.copytree(run, older)
    with np.load(older / "artifacts/codebook.npz") as f:  # the codebook format of earlier versions
        np.savez(older / "artifacts/codebook.npz", **{k: f[k] for k in ("medoid_indices", "labels", "codebook",
                                                                        "dist_to_codes")})
    assert main(["encode", "--run", str(older), "--images", str(tmp_path / "floats.npy")]) == 2
    assert "another version of rapids_geovq" in capsys.readouterr().err
    assert main(["encode", "--run", str(tmp_path / "nowhere"), "--images", str(tmp_path / "floats.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_estimators_clone_and_get_params():
    from sklearn.base import clone

    from rapids_geovq import Execution, GeodesicCodebook, GeodesicKMeans
    from rapids_geovq.geodesic.engine import ThreadEngine

    with ThreadEngine(1) as eng:
        ex = Execution(backend="numpy", engine=eng)
        cb = GeodesicCodebook(12, k=7, storage="on_demand", swap_near=5, execution=ex)
        c2 = clone(cb)
        assert c2.get_params()["n_codes"] == 12 and c2.get_params()["swap_near"] == 5
        assert c2.execution is ex  # an execution (an open engine) is shared, not copied
        km = GeodesicKMeans(5, n_init=2, random_state=1, execution=ex)
        assert clone(km).get_params() == km.get_params()
        assert "execution" in km.get_params() and set(cb.get_params()) >= {"n_codes", "k", "random_state", "storage"}
    Z = np.random.default_rng(0).normal(size=(200, 3))
    a = GeodesicCodebook(5, n_init=1, execution=Execution(backend="numpy")).fit(Z)
    b = clone(a).fit(Z)
    np.testing.assert_array_equal(a.medoid_indices_, b.medoid_indices_)
    np.testing.assert_array_equal(a.transform(Z[:4]).argmin(axis=1), a.predict(Z[:4]))

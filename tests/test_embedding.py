import numpy as np
import pytest

from rapids_geovq.geodesic.embedding import landmark_mds


def test_recovers_planar_points_up_to_a_rigid_motion():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2)) * [3, 1]
    L = rng.choice(300, 12, replace=False)
    d = np.sqrt(((X[:, None, :] - X[None, L, :]) ** 2).sum(-1))
    Y = landmark_mds(d, L)
    # pairwise distances are preserved exactly (a rotation/reflection/translation of X)
    DX = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    DY = np.sqrt(((Y[:, None] - Y[None]) ** 2).sum(-1))
    np.testing.assert_allclose(DY, DX, atol=1e-8)


def test_checks_inputs():
    with pytest.raises(ValueError, match="positive eigenvalues"):
        landmark_mds(np.zeros((5, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="K = len"):
        landmark_mds(np.ones((5, 3)), [0, 1])
    bad = np.ones((5, 3))
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        landmark_mds(bad, [0, 1, 3])

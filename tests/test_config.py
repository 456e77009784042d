import pytest

from rapids_geovq.config import ConfigError, JobConfig, load_job, parse_overrides, save_job


def test_paper_job_has_paper_settings():
    cfg = load_job("jobs/paper.yaml")
    assert cfg.data.n_train is None and cfg.data.n_test is None
    assert (cfg.vae.latent_dim, cfg.vae.hidden_dim, cfg.vae.epochs, cfg.vae.batch_size) == (20, 400, 10, 128)
    assert cfg.vae.lr == 1e-3
    assert cfg.graph.k == 10 and cfg.kmeans.n_clusters == 64
    assert (cfg.prior.embed_dim, cfg.prior.hidden_dim, cfg.prior.seq_len, cfg.prior.batch_size,
            cfg.prior.epochs) == (64, 128, 32, 64, 10)
    assert (cfg.vqvae.n_codes, cfg.vqvae.code_dim, cfg.vqvae.beta, cfg.vqvae.epochs) == (64, 20, 0.25, 30)
    assert cfg.prior.n_codes == 64


def test_defaults_are_the_paper_settings():
    # the paper job adds seeds and studies around the same model settings
    studies = ["seeds=null", "sweep.n_codes=[]", "subsample.sizes=[]"]
    assert load_job(None).to_dict() == load_job("jobs/paper.yaml", ["name=geovq", "run_dir=runs/geovq", *studies]).to_dict()


def test_overrides_are_typed_and_nested():
    cfg = load_job("jobs/quick.yaml", ["kmeans.n_clusters=16", "geodesic.n_workers=1", "vae.lr=0.01",
                                       "sequences.kinds=[dataset]"])
    assert cfg.kmeans.n_clusters == 16 and cfg.prior.n_codes == 16
    assert cfg.geodesic.n_workers == 1 and cfg.vae.lr == 0.01
    assert cfg.sequences.kinds == ["dataset"]
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_unknown_key_names_the_nearest_valid_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key kmeans.'n_cluster'.*Did you mean 'n_clusters'"):
        load_job(None, ["kmeans.n_cluster=3"])
    with pytest.raises(ConfigError, match="unknown config key 'grahp'.*'graph'"):
        load_job(None, ["grahp.k=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("vae:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="'epochs'"):
        load_job(bad)


def test_wrong_types_and_impossible_settings():
    with pytest.raises(ConfigError, match="integer"):
        load_job(None, ["graph.k=ten"])
    with pytest.raises(ConfigError, match="more than data.n_train"):
        load_job(None, ["data.n_train=50", "kmeans.n_clusters=64"])
    with pytest.raises(ConfigError, match="prior.n_codes"):
        load_job(None, ["prior.n_codes=32"])
    with pytest.raises(ConfigError, match="key=value"):
        load_job(None, ["kmeans.n_clusters"])
    with pytest.raises(ConfigError, match="not found"):
        load_job("jobs/nope.yaml")
    for bad, msg in (("prior.seq_len=0", "prior.seq_len must be at least 1"),
                     ("vae.epochs=-1", "vae.epochs must be at least 1"),
                     ("graph.k=0", "graph.k must be at least 1"),
                     ("vqvae.lr=0", "vqvae.lr must be positive"),
                     ("geodesic.n_workers=0", "geodesic.n_workers must be at least 1"),
                     ("geodesic.method=dijkstra", "geodesic.method must be one of auto, numba, scipy, cuda, cugraph"),
                     ("geodesic.method=cuda backend=numpy", "runs on a GPU but backend=numpy"),
                     ("backend=tpu", "backend must be one of"),
                     ("geodesic.cluster=", "geodesic.cluster must be")):
        with pytest.raises(ConfigError, match=msg):
            load_job(None, bad.split())
    with pytest.raises(ConfigError, match="longer than the 100 codes of data.n_train"):
        load_job(None, ["data.n_train=100", "kmeans.n_clusters=8", "prior.seq_len=500"])
    with pytest.raises(ConfigError, match="longer than the 10 codes of data.n_test"):
        load_job(None, ["data.n_train=200", "data.n_test=10"])
    for bad in ("data.n_train=abc", "data.n_train=50.5", "geodesic.n_workers=x", "data.n_test=true"):
        with pytest.raises(ConfigError, match="integer or null"):
            load_job(None, [bad])
    with pytest.raises(ConfigError, match="string or null"):
        load_job(None, ["data.idx_dir=3"])


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_job("jobs/quick.yaml")
    save_job(cfg, tmp_path / "c.yaml")
    assert load_job(tmp_path / "c.yaml").to_dict() == cfg.to_dict()
    assert isinstance(cfg, JobConfig)

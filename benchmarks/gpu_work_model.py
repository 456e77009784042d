"""Work of the batched GPU shortest-path search, counted on the CPU (no GPU needed).

A round-synchronous NumPy model of ``rapids_geovq.gpu.cuda_paths.batched_rows`` (same frontier,
same near/far thresholds, same double-buffered flags; on the GPU a round may also see some
improvements made earlier in the same round, so it needs at most as many rounds). For one batch
of sources of the paper job's graph, and each threshold step delta, it counts:

- rounds (each is three kernel launches and one 4-byte read back),
- frontier visits (node-rounds; each scans the node's ``lanes`` pending flags),
- lane-relaxations (edge x source pairs relaxed), against Dijkstra's (each node's edges once per
  source), and the share of a frontier node's lanes that had work.

    python benchmarks/gpu_work_model.py --graph runs/paper/artifacts/knn_graph.npz --lanes 1024

writes docs/benchmarks/gpu_work_model.{json,md}. The model's distances are checked against SciPy.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def run(plan, start: int, lanes: int, delta: float) -> tuple[dict, np.ndarray]:
    indptr, indices, w = plan.indptr.astype(np.int64), plan.indices.astype(np.int64), plan.weights
    n, B = plan.n, lanes
    deg = np.diff(indptr)
    dist = np.full((n, B), np.inf)
    flag = np.zeros((n, B), bool)
    src = np.arange(start, start + B) % n
    dist[src, np.arange(B)] = 0
    flag[src, np.arange(B)] = True
    thr = np.full(B, delta)
    rounds = visits = pairs = relax = improved = 0
    t = time.perf_counter()
    flat = dist.reshape(-1)
    while True:
        front = np.flatnonzero(flag.any(axis=1))
        if front.size == 0:
            break
        rounds += 1
        visits += front.size
        f = flag[front]
        near = f & (dist[front] < thr[None, :])
        vi, bi = np.nonzero(near)
        v = front[vi]
        pairs += v.size
        cnt = deg[v]
        total = int(cnt.sum())
        relax += total
        offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        e = np.repeat(indptr[v], cnt) + offs
        b = np.repeat(bi, cnt)
        val = np.repeat(dist[v, bi], cnt) + w[e]
        key = indices[e] * B + b
        o = np.lexsort((val, key))
        key, val = key[o], val[o]
        first = np.ones(key.size, bool)
        first[1:] = key[1:] != key[:-1]
        key, val = key[first], val[first]
        better = val < flat[key]
        improved += int(better.sum())
        flat[key[better]] = val[better]
        nxt = np.zeros(n * B, bool)
        nxt[key[better]] = True
        nxt = nxt.reshape(n, B)
        nxt[front] |= f & ~near
        flag = nxt
        thr[~near.any(axis=0)] += delta
    dij = int(deg.sum()) * B
    rec = {"lanes": B, "first_source": start, "delta": delta, "rounds": rounds, "frontier_visits": visits,
           "pending_lane_pairs": pairs, "lane_relaxations": relax, "improvements": improved,
           "dijkstra_relaxations": dij, "relaxations_vs_dijkstra": relax / dij,
           "lane_occupancy": pairs / max(visits * B, 1), "flag_bytes_scanned": visits * B,
           "model_seconds": time.perf_counter() - t}
    return rec, dist


def main() -> None:
    from scipy.sparse.csgraph import dijkstra

    from rapids_geovq.geodesic.plan import make_plan
    from rapids_geovq.gpu.cuda_paths import default_delta

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graph", default="runs/paper/artifacts/knn_graph.npz")
    ap.add_argument("--lanes", type=int, default=1024)
    ap.add_argument("--start", type=int, default=20000, help="first source's row position")
    ap.add_argument("--mults", default="inf,4,1", help="delta as multiples of the mean edge weight")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    G = sp.load_npz(args.graph).tocsr()
    plan = make_plan(G)
    mean = float(plan.weights.mean())
    default = default_delta(plan.weights)
    records = []
    for m in (float(x) for x in args.mults.split(",")):
        rec, dist = run(plan, args.start, args.lanes, m * mean)
        rec["delta_mean_weights"] = m
        rec["is_default"] = bool(np.isclose(m * mean, default))
        # exactness of the model: its rows are SciPy's (float64, in row-position numbering)
        ref = dijkstra(plan.graph, indices=plan.order[(args.start + np.arange(3)) % plan.n])
        rec["equals_scipy_first_3"] = bool(np.array_equal(dist[:, :3].T, ref[:, plan.order]))
        print(json.dumps(rec), flush=True)
        records.append(rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"graph": args.graph, "n": plan.n, "nnz": int(plan.indices.size), "mean_edge_weight": mean,
            "note": "round-synchronous model of one batch; a GPU round can only need fewer rounds"}
    (out / "gpu_work_model.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=2))
    lines = [f"Work of one batch of {args.lanes} sources (positions {args.start}..) of the batched GPU search on "
             f"the paper graph (n = {plan.n:,}, nnz = {plan.indices.size:,}), by threshold step delta; from "
             "`python benchmarks/gpu_work_model.py` (a NumPy model, machine-independent counts).", "",
             "| delta (mean edge weights) | rounds | frontier visits | lane-relaxations / Dijkstra's | lanes with work on a frontier node | improvements |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['delta_mean_weights']:g}{' (default)' if r['is_default'] else ''} | {r['rounds']} | "
                     f"{r['frontier_visits']:,} | {r['relaxations_vs_dijkstra']:.3f} | {r['lane_occupancy']:.1%} | "
                     f"{r['improvements']:,} |")
    (out / "gpu_work_model.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

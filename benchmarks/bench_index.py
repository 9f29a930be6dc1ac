"""The gallery's ANN index (FAISS HNSW or IVF, inner product on unit vectors) against exact search, at gallery scale.

Synthetic 256-dimensional unit embeddings (the learned extractor's dimension), two kinds:
- `random`: independent uniform directions, the hardest case for any ANN index (every point is about equally far
  from every other, so the nearest neighbour is barely nearer than the 10th);
- `clustered`: gallery-like, 100 images per model, each its model's centre plus as much noise (cosine to the
  centre about 0.7, to another image of its model about 0.5); queries are new images of random models;
- `prototypes`: one row per model (its centre, what `identify` searches); queries are new images of random models.

For each structure and size: build time (IVF: k-means training on a seeded sample and adding) with `--threads`
threads (wall and process CPU seconds: the machine is shared), index size (the serialised index, about its
memory), single-query latency p50/p95 of the index (HNSW at several `ef_search`, IVF at several `nprobe`) and of
exact search (`modelprint.gallery.index.nearest`, NumPy), and recall@1 / recall@10 against exact search. Queries
one at a time on one thread (BLAS too). Rows of earlier runs with the same queries and seed are kept, so sizes and
structures can be run separately.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace

import numpy as np
from threadpoolctl import threadpool_limits

from common import RESULTS_DIR, machine, update_readme_section, write_result
from modelprint.gallery.index import STRUCTURES, IndexParams, build, nearest

DIM = 256
PER_MODEL = 100
EF_SEARCH = (32, 64, 128, 256)
NPROBE = (1, 2, 4, 8, 16, 32, 64)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def data(kind: str, n: int, queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        return unit(rng.standard_normal((n, DIM), dtype=np.float32)), unit(rng.standard_normal((queries, DIM),
                                                                                              dtype=np.float32))
    centres = unit(rng.standard_normal((max(1, n // PER_MODEL if kind == "clustered" else n), DIM),
                                       dtype=np.float32))

    def draw(models: np.ndarray) -> np.ndarray:
        noise = unit(rng.standard_normal((len(models), DIM), dtype=np.float32))
        return unit(0.7 * centres[models] + 0.714 * noise)

    if kind == "prototypes":
        return centres, draw(rng.integers(0, n, queries))
    x = np.concatenate([draw(np.repeat(np.arange(s, min(s + 1000, len(centres))), PER_MODEL))
                        for s in range(0, len(centres), 1000)])[:n]
    return x, draw(rng.integers(0, len(centres), queries))


def latencies(fn, q: np.ndarray) -> list[float]:  # noqa: ANN001
    out = []
    for i in range(len(q)):
        t = time.perf_counter()
        fn(q[i : i + 1])
        out.append(time.perf_counter() - t)
    return out


def ms(values: list[float], pct: float) -> float:
    return round(float(np.percentile(values, pct)) * 1e3, 3)


def run(kind: str, n: int, queries: int, exact_queries: int, params: IndexParams, sweep: tuple[int, ...],
        threads: int, seed: int) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    x, q = data(kind, n, queries, rng)
    truth = nearest(q, x, 10)[1]
    exact = latencies(lambda v: nearest(v, x, 10), q[:exact_queries])
    faiss.omp_set_num_threads(threads)
    t, cpu = time.perf_counter(), time.process_time()
    ann = build("images", "bench", "1", "-", np.arange(n), x, params)
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - cpu
    size = int(faiss.serialize_index(ann.index).size)
    faiss.omp_set_num_threads(1)
    knob = "nprobe" if params.structure == "ivf" else "ef_search"
    row = {"structure": params.structure, "kind": kind, "n": n, "params": asdict(ann.params), "threads": threads,
           "build_s": round(build_s, 2), "build_cpu_s": round(build_cpu_s, 2), "index_mb": round(size / 2**20, 1),
           "vectors_mb": round(x.nbytes / 2**20, 1), "exact_p50_ms": ms(exact, 50), "exact_p95_ms": ms(exact, 95),
           "sweep": []}
    for value in sweep:
        ann.params = replace(ann.params, **{knob: value})
        found = ann.search(q, 10)[1]
        lat = latencies(lambda v: ann.search(v, 10), q)
        r1 = float(np.mean(found[:, 0] == truth[:, 0]))
        r10 = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
        row["sweep"].append({knob: value, "p50_ms": ms(lat, 50), "p95_ms": ms(lat, 95), "recall_at_1": round(r1, 4),
                             "recall_at_10": round(r10, 4)})
        print(params.structure, kind, n, row["sweep"][-1], flush=True)
    print(params.structure, kind, n, {k: v for k, v in row.items() if k != "sweep"}, flush=True)
    return row


def setting(row: dict) -> str:
    p = row["params"]
    if row["structure"] == "ivf":
        return f"IVF, nlist {p['nlist']}"
    return f"HNSW, M {p['m']}, efC {p['ef_construction']}"


def report(res: dict, name: str) -> str:
    how = ""
    if name != "index":  # a side run: its settings (the main section's rows name theirs)
        p = res["rows"][0]["params"]
        how = f" --name {name} --structures {p['structure']} " + (f"--nlist {p['nlist']}" if p["structure"] == "ivf"
                                                                  else f"--m {p['m']} --ef-construction "
                                                                       f"{p['ef_construction']}")
    lines = [
        f"## Gallery ANN index (`python benchmarks/bench_index.py --seed 0{how}`)",
        "",
        "FAISS indexes, inner product on 256-d unit vectors, against exact NumPy search: HNSW (graph; `ef_search` "
        "candidates per query) and IVF (`IndexIVFFlat`: `nlist` spherical k-means cells, FAISS's two-level "
        "clustering from 4,096 cells, trained on a seeded sample of up to 64 rows per cell; `nprobe` cells scanned "
        f"per query). {res['queries']} queries one at a time on one thread (exact: {res['exact_queries']}); built "
        "with the `threads` shown, on a 2-core machine shared with other jobs (build CPU seconds: `–` where a run did "
        "not record them). Index MB is the serialised index (about its memory). Recall is against exact search. "
        "`clustered`: 100 images "
        "per model, gallery-like (the images index); `prototypes`: one row per model, queries are new images of "
        "those models (the prototypes index, what `identify` searches); `random`: independent directions, queries "
        "too (the worst case for ANN).",
        "",
        "| data | n | index | threads | build s (CPU s) | index MB | exact p50 / p95 ms | ef_search / nprobe | "
        "ANN p50 / p95 ms | recall@1 | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        for a in row["sweep"]:
            knob = a.get("nprobe", a.get("ef_search"))
            built = f"{row['build_s']} ({row.get('build_cpu_s', '–')})"
            lines.append(f"| {row['kind']} | {row['n']:,} | {setting(row)} | {row['threads']} | {built} | "
                         f"{row['index_mb']} | {row['exact_p50_ms']} / {row['exact_p95_ms']} | {knob} | "
                         f"{a['p50_ms']} / {a['p95_ms']} | {a['recall_at_1']:.3f} | {a['recall_at_10']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--kinds", default="clustered,prototypes,random")
    ap.add_argument("--structures", default=",".join(STRUCTURES), help="hnsw, ivf or both (comma-separated).")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=50)
    ap.add_argument("--m", type=int, default=IndexParams.m)
    ap.add_argument("--ef-construction", type=int, default=IndexParams.ef_construction)
    ap.add_argument("--ef-search", default=",".join(map(str, EF_SEARCH)), help="HNSW sweep.")
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (0: 4·sqrt(n)).")
    ap.add_argument("--nprobe", default=",".join(map(str, NPROBE)), help="IVF sweep.")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS threads while building.")
    ap.add_argument("--name", default="index", help="Results file and README section.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sweeps = {"hnsw": tuple(int(e) for e in args.ef_search.split(",")),
              "ivf": tuple(int(e) for e in args.nprobe.split(","))}
    res = {"queries": args.queries, "exact_queries": args.exact_queries, "seed": args.seed, "machine": machine(),
           "rows": []}
    previous = RESULTS_DIR / f"{args.name}.json"
    if previous.exists():  # rows of other settings or sizes measured with the same queries and seed are kept
        old = json.loads(previous.read_text())
        if all(old.get(k) == res[k] for k in ("queries", "exact_queries", "seed")):
            res["rows"] = old["rows"]
    key = ("structure", "kind", "n")
    threadpool_limits(1, "blas")  # exact search on one thread, as the index's queries
    for structure in args.structures.split(","):
        params = IndexParams(structure, m=args.m, ef_construction=args.ef_construction, nlist=args.nlist,
                             seed=args.seed)
        for kind in args.kinds.split(","):
            for n in args.sizes.split(","):
                row = run(kind, int(n), args.queries, args.exact_queries, params, sweeps[structure], args.threads,
                          args.seed)
                res["rows"] = sorted([r for r in res["rows"] if tuple(r[k] for k in key) != tuple(row[k] for k in key)]
                                     + [row], key=lambda r: (r["kind"], r["n"], r["structure"]))
                path = write_result(args.name, res)  # after every size: a long run keeps what it measured
                update_readme_section(args.name, report(res, args.name))
                print(f"wrote {path} and the README section", flush=True)


if __name__ == "__main__":
    main()

"""Exact and indexed search: memstore against numpy, faiss and LanceDB, side by side in one run.

Exact search (cosine, k=10), batches of 1, 64 and 1024 queries, on N x D float32
vectors for every N in --sizes and D in --dims:

  memstore  mem.search(q, k, index="exact") through memstore.open + mem.add (the
            searcher built once; loading the vectors from Lance is timed apart)
  numpy     normalised copy in RAM, matmul + argpartition (query chunks of <= 256 MB scores)
  faiss     faiss-cpu IndexFlatIP on normalised vectors (its BLAS path for >= 20 queries)
  lancedb   a Lance dataset of the same vectors without an index, ``nearest=`` (brute force)

and the machine's float32 matmul rate: the faster of a 4096 x 4096 @ 4096 x 4096 matmul
in torch (MKL) and in numpy (OpenBLAS, which memstore's CPU search calls), measured
before each data set. memstore's rate is 2 * n_queries * N * D / time. Every method runs in its own process: thread
pools of different libraries (torch's OpenMP, OpenBLAS, faiss's OpenMP, Lance's)
spin-wait and slow each other down when they share one. Each batch is warmed up,
then timed several times; the median is reported. Batch 1 is the median over
single queries. All methods are checked to return the same neighbours as memstore.

Indexed search at --ann-rows x 512 (default 1,000,000): mem.create_index for
IVF_PQ and IVF_HNSW_SQ (tuned by memstore to recall@10 >= 0.95 on its own rows),
then recall@10 of held-out queries against exact search, and single-query latency
against exact single-query latency, on two data sets:

  clustered  a mixture of 1,000 Gaussians shaped like embeddings: the centres spread
             with a decaying spectrum (variance of the i-th of 512 random orthogonal
             directions ~ 1/i, as PCA spectra of real image/text embeddings decay);
             around each centre a low-dimensional patch (32 directions of the
             cluster's own, variances ~ 1/i) plus isotropic noise, scaled so that a
             point's cosine to its centre is ~0.75. Nearest-neighbour cosines come out
             ~0.75 (1st) and ~0.68 (10th) against ~0 for a random pair: neighbours
             stand out as they do in real embeddings, unlike in Gaussian data (~0.19
             and ~0.16 against 0)
  gaussian   N(0, I): no structure at all, the hardest case for an ANN index

Queries are new draws from the same distribution, never rows of the memory.

    python benchmarks/bench_search.py            # the full run (~25 min, ~25 GB of disk)
    python benchmarks/bench_search.py --quick    # a sanity run on small data (~1 min)
    python benchmarks/bench_search.py --sizes 100000 --dims 512 --no-ann

Writes benchmarks/results/search-<sizes>x<dims>.json and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10
BATCHES = (1, 64, 1024)
SINGLES = 20  # single queries timed for batch 1 (median)
ANN_QUERIES = 1000  # held-out queries for recall at the ANN size
ANN_LATENCY_QUERIES = 100  # of them, timed one at a time
INDEX_TYPES = ("IVF_PQ", "IVF_HNSW_SQ")


# -- data ----------------------------------------------------------------------------
def gaussian(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 1 << 16):  # in chunks: float32 throughout, bounded temporaries
        out[lo:lo + (1 << 16)] = rng.standard_normal((min(n - lo, 1 << 16), dim), dtype=np.float32)
    return out


def clustered(n: int, dim: int, seed: int, centres: int = 1000, rank: int = 32) -> np.ndarray:
    """A mixture of ``centres`` Gaussians shaped like embeddings (module docstring).

    Centres: N(0, diag(lam)) in random orthogonal directions, lam_i ~ 1/i summing
    to ``dim``: a decaying global spectrum, as PCA of real embeddings shows. Around
    each centre, noise of squared norm ~0.78 dim (so cos(point, centre) ~ 0.75):
    three quarters in ``rank`` directions of the cluster's own with variances ~ 1/i
    (a cluster is a low-dimensional patch, as a class is in an embedding space),
    one quarter isotropic. The centres and the clusters' directions depend on
    ``dim`` only (seed 1234), so the memory and its held-out queries (another
    ``seed``) are draws from one distribution.
    """
    shared = np.random.default_rng(1234)
    lam = 1.0 / np.arange(1, dim + 1)
    lam *= dim / lam.sum()
    rotation, _ = np.linalg.qr(shared.standard_normal((dim, dim)))
    c = ((shared.standard_normal((centres, dim)) * np.sqrt(lam)) @ rotation.T).astype(np.float32)
    noise = dim * (1 / 0.75**2 - 1)  # |x - c|^2
    mu = 1.0 / np.arange(1, rank + 1)
    mu *= 0.75 * noise / mu.sum()
    # (centres, rank, dim): each cluster's directions, scaled; random directions in high
    # dimension are nearly orthogonal
    bases = (shared.standard_normal((centres, rank, dim)) * np.sqrt(mu / dim)[None, :, None]).astype(np.float32)
    iso = np.float32(np.sqrt(0.25 * noise / dim))
    rng = np.random.default_rng(seed)
    label = rng.integers(0, centres, n)
    out = rng.standard_normal((n, dim), dtype=np.float32) * iso + c[label]
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(centres + 1))
    for j in range(centres):  # one matmul per cluster: (members, rank) @ (rank, dim)
        members = order[bounds[j]:bounds[j + 1]]
        out[members] += rng.standard_normal((len(members), rank), dtype=np.float32) @ bases[j]
    return out


def make_memory(path: Path, x: np.ndarray) -> float:
    """A memory holding ``x`` (labels: 100 classes), built through memstore; returns seconds."""
    import pyarrow as pa

    import memstore

    start = time.perf_counter()
    mem = memstore.open(path)
    labels = pa.array(np.char.add("class_", (np.arange(len(x)) % 100).astype(str)))
    mem.add(x, labels, provenance={"dataset": "synthetic"}, message="benchmark rows", progress=False)
    return time.perf_counter() - start


def make_lance(path: Path, x: np.ndarray) -> None:
    """A bare Lance dataset of the same vectors, no index: the LanceDB brute-force peer."""
    import lance
    import pyarrow as pa

    flat = pa.array(x.reshape(-1))  # zero copy
    table = pa.table({"id": np.arange(len(x)), "vector": pa.FixedSizeListArray.from_arrays(flat, x.shape[1])})
    lance.write_dataset(table, str(path), max_rows_per_file=1 << 20)


# -- environment -----------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


class Others:
    """Share of the machine's CPU time taken by other processes while a block of work ran."""

    def __enter__(self):
        self.ticks = cpu_ticks()
        self.own = self._own()
        return self

    def __exit__(self, *exc):
        busy0, total0 = self.ticks
        busy1, total1 = cpu_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        own = (self._own() - self.own) * hz
        self.share = max(0.0, (busy1 - busy0) - own) / max(1, total1 - total0)

    @staticmethod
    def _own() -> float:
        """CPU seconds of this process and of its finished workers."""
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def environment() -> dict:
    import faiss
    import lance
    import lancedb
    import torch

    import memstore

    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": {"memstore": memstore.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "faiss": faiss.__version__, "lancedb": lancedb.__version__, "pylance": lance.__version__},
    }


# -- timing (inside the workers) ---------------------------------------------------------
def timed(fn, warmup, budget_s: float = 6.0, max_repeat: int = 5, min_repeat: int = 3):
    """Median seconds of ``fn()`` after ``warmup()``: at least min_repeat runs, more while in budget."""
    warmup()
    times, out = [], None
    while len(times) < max_repeat and (len(times) < min_repeat or sum(times) < budget_s):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        if times[0] > 4 * budget_s:  # one run is already long: that is enough
            break
    return statistics.median(times), times, out


def measure(search, load_s: float, queries: np.ndarray, batches, out_dir: Path, name: str,
            big_repeat: int = 5) -> dict:
    """Time ``search(q) -> (n_q, K) positions`` per batch; save the neighbours for the agreement check."""
    res = {"load_s": load_s, "batches": {}}
    for b in batches:
        with Others() as others:
            if b == 1:
                singles = []
                search(queries[:1])  # warm-up
                found = []
                for i in range(SINGLES):
                    start = time.perf_counter()
                    found.append(search(queries[i:i + 1]))
                    singles.append(time.perf_counter() - start)
                median, times, found = statistics.median(singles), singles, np.concatenate(found)
            else:
                median, times, found = timed(lambda: search(queries[:b]), lambda: search(queries[:min(b, 64)]),
                                             max_repeat=big_repeat)
        np.save(out_dir / f"{name}-{b}.npy", found)
        res["batches"][str(b)] = {"s": median, "times": times, "others_cpu_share": others.share}
        print(f"    {name:9s} batch {b:5d}: {median * 1e3:10.1f} ms", flush=True)
    return res


# -- workers: one method per process -----------------------------------------------------
def worker_matmul(args) -> dict:
    import torch

    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    t_torch, _, _ = timed(lambda: torch.mm(a, b, out=out), lambda: torch.mm(a, b, out=out), budget_s=4)
    an, bn, outn = a.numpy(), b.numpy(), np.empty((n, n), np.float32)
    t_numpy, _, _ = timed(lambda: np.matmul(an, bn, out=outn), lambda: np.matmul(an, bn, out=outn), budget_s=4)
    flops = 2 * n**3
    return {"torch_gflops": flops / t_torch / 1e9, "numpy_gflops": flops / t_numpy / 1e9,
            "shape": f"{n}x{n} @ {n}x{n}"}


def worker_memstore(args, queries, out_dir) -> dict:
    import memstore

    start = time.perf_counter()
    mem = memstore.open(args.memory, read_only=True)
    mem.searcher("cosine", index="exact")  # reads the vectors from Lance into RAM, once
    load_s = time.perf_counter() - start

    def search(q):
        return mem.search(q, K, index="exact")["id"].to_numpy().reshape(len(q), K)  # ids = positions here

    return measure(search, load_s, queries, args.batches, out_dir, "memstore")


def worker_numpy(args, queries, out_dir) -> dict:
    start = time.perf_counter()
    x = np.load(args.vectors, mmap_mode="r")
    xn = np.empty(x.shape, np.float32)
    for lo in range(0, len(x), 1 << 16):
        block = np.asarray(x[lo:lo + (1 << 16)])
        xn[lo:lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    load_s = time.perf_counter() - start
    n = len(xn)
    chunk = max(1, (256 << 20) // (4 * n))  # queries per chunk: at most 256 MB of scores

    def search(q):
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        out = np.empty((len(q), K), np.int64)
        for lo in range(0, len(q), chunk):
            s = qn[lo:lo + chunk] @ xn.T  # (chunk, n) cosine similarities
            part = np.argpartition(s, n - K, axis=1)[:, n - K:]  # the K largest, unordered
            order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
            out[lo:lo + chunk] = np.take_along_axis(part, order, 1)
        return out

    return measure(search, load_s, queries, args.batches, out_dir, "numpy")


def worker_faiss(args, queries, out_dir) -> dict:
    import faiss

    start = time.perf_counter()
    x = np.load(args.vectors, mmap_mode="r")
    index = faiss.IndexFlatIP(x.shape[1])
    for lo in range(0, len(x), 1 << 16):
        block = np.array(x[lo:lo + (1 << 16)])
        faiss.normalize_L2(block)
        index.add(block)
    load_s = time.perf_counter() - start

    def search(q):
        q = q.copy()
        faiss.normalize_L2(q)
        return index.search(q, K)[1]

    return measure(search, load_s, queries, args.batches, out_dir, "faiss")


def worker_lancedb(args, queries, out_dir) -> dict:
    import lance

    start = time.perf_counter()
    ds = lance.dataset(args.lance)
    load_s = time.perf_counter() - start

    def search(q):
        hits = ds.to_table(nearest={"column": "vector", "q": q if len(q) > 1 else q[0], "k": K,
                                    "metric": "cosine"}, columns=["id", "_distance"])
        qi = hits["query_index"].to_numpy() if "query_index" in hits.column_names else np.zeros(hits.num_rows, int)
        order = np.lexsort((hits["id"].to_numpy(), hits["_distance"].to_numpy(), qi))
        return hits["id"].to_numpy()[order].reshape(len(q), K)

    # brute force re-reads every vector per call: the 1024 batch is timed once, and when
    # even that is too slow it is extrapolated linearly in queries from 64 and 256
    res = measure(search, load_s, queries, [b for b in args.batches if b <= 64], out_dir, "lancedb", big_repeat=3)
    for b in [b for b in args.batches if b > 64]:
        t64 = res["batches"].get("64", {}).get("s")
        if t64 is not None and t64 * b / 64 > args.lance_budget:
            with Others() as others:
                start = time.perf_counter()
                search(queries[:256])
                t256 = time.perf_counter() - start
            s = t256 + (b - 256) * (t256 - t64) / 192
            res["batches"][str(b)] = {"s": s, "times": [t64, t256], "extrapolated_from": [64, 256],
                                      "others_cpu_share": others.share}
            print(f"    lancedb   batch {b:5d}: {s * 1e3:10.1f} ms (extrapolated from 64 and 256 queries)")
        else:
            res["batches"].update(measure(search, 0, queries, [b], out_dir, "lancedb", big_repeat=1)["batches"])
    return res


def worker_ann(args, queries, out_dir) -> dict:
    """create_index on the memory, then recall of held-out queries and single-query latency."""
    import memstore

    mem = memstore.open(args.memory)
    truth = np.load(out_dir / "truth.npy")  # exact neighbours of the queries (ids)
    exact_single = float(np.load(out_dir / "exact_single_s.npy"))
    out = {}
    for index_type in args.index_types:
        with Others() as others:
            start = time.perf_counter()
            report = mem.create_index(index_type)
            wall = time.perf_counter() - start
        searcher = mem.searcher("cosine", index="ann")
        batch_start = time.perf_counter()
        found = mem.search(queries, K, index="ann")["id"].to_numpy().reshape(len(queries), K)
        batch_s = time.perf_counter() - batch_start
        from memstore.search import recall

        singles = []
        for i in range(ANN_LATENCY_QUERIES):
            start = time.perf_counter()
            searcher.search(queries[i:i + 1], K)
            singles.append(time.perf_counter() - start)
        single = statistics.median(singles)
        out[index_type] = {
            **report.as_dict(), "create_index_s": wall, "build_others_cpu_share": others.share,
            "heldout_recall": recall(found, truth), "heldout_queries": len(queries),
            "single_ms": single * 1e3, "batch_ms_per_query": batch_s * 1e3 / len(queries),
            "exact_single_ms": exact_single * 1e3, "speedup_vs_exact_single": exact_single / single,
        }
        print(f"    {index_type:11s}: build {report.build_seconds:6.1f} s, nprobes {report.nprobes}, refine "
              f"{report.refine_factor}, recall@10 held-out {out[index_type]['heldout_recall']:.3f} (own rows "
              f"{report.recall:.3f}), {single * 1e3:.2f} ms/query = {exact_single / single:.1f}x exact", flush=True)
    return out


def run_worker(kind: str, **kw) -> dict:
    """Run one worker in a fresh process; it prints its result as the last line of stdout."""
    cmd = [sys.executable, __file__, "--worker", kind]
    for key, value in kw.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        cmd += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    lines = proc.stdout.rstrip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    return json.loads(lines[-1])


def worker_main(args) -> None:
    out_dir = Path(args.out_dir) if args.out_dir else None
    queries = np.load(args.queries) if args.queries else None
    if args.worker == "matmul":
        res = worker_matmul(args)
    else:
        res = {"memstore": worker_memstore, "numpy": worker_numpy, "faiss": worker_faiss,
               "lancedb": worker_lancedb, "ann": worker_ann}[args.worker](args, queries, out_dir)
    print(json.dumps(res))


# -- the run ---------------------------------------------------------------------------------
def agreement(out_dir: Path, name: str, batches) -> dict:
    """Share of memstore's neighbours (per query, as sets) that ``name`` also returned."""
    res = {}
    for b in batches:
        ours, theirs = np.load(out_dir / f"memstore-{b}.npy"), out_dir / f"{name}-{b}.npy"
        if theirs.exists():
            theirs = np.load(theirs)
            res[str(b)] = float(np.mean([len(np.intersect1d(o, t)) / K for o, t in zip(ours, theirs)]))
    return res


def exact_run(n: int, dim: int, args, work: Path) -> dict:
    print(f"\n== exact search, {n:,} x {dim} ==", flush=True)
    cell = work / f"{n}x{dim}"
    cell.mkdir(parents=True, exist_ok=True)
    x = gaussian(n, dim, seed=0)
    q = gaussian(max(args.batches), dim, seed=1)  # held out: other draws
    np.save(cell / "x.npy", x)
    np.save(cell / "q.npy", q)
    add_s = make_memory(cell / "bench.mem", x)
    make_lance(cell / "bare.lance", x)
    del x
    print(f"  memory built in {add_s:.1f} s", flush=True)
    r = {"rows": n, "dim": dim, "add_s": add_s, "methods": {}}
    r["matmul"] = run_worker("matmul")
    print(f"  matmul 4096^3: torch {r['matmul']['torch_gflops']:.0f} GFLOP/s, "
          f"numpy {r['matmul']['numpy_gflops']:.0f} GFLOP/s", flush=True)
    common = dict(queries=cell / "q.npy", out_dir=cell, batches=args.batches)
    r["methods"]["memstore"] = run_worker("memstore", memory=cell / "bench.mem", **common)
    r["methods"]["faiss"] = run_worker("faiss", vectors=cell / "x.npy", **common)
    r["methods"]["numpy"] = run_worker("numpy", vectors=cell / "x.npy", **common)
    if not args.no_lancedb:
        r["methods"]["lancedb"] = run_worker("lancedb", lance=cell / "bare.lance", lance_budget=args.lance_budget,
                                             **common)
    for name in r["methods"]:
        r["methods"][name]["agreement"] = agreement(cell, name, args.batches)
    for b in args.batches:
        t = r["methods"]["memstore"]["batches"][str(b)]["s"]
        r["methods"]["memstore"]["batches"][str(b)]["gflops"] = 2 * b * n * dim / t / 1e9
    shutil.rmtree(cell / "bare.lance", ignore_errors=True)
    (cell / "x.npy").unlink()
    return r


def ann_run(n: int, dim: int, args, work: Path, exact_memory: Path | None) -> dict:
    out = {}
    for data in ("clustered", "gaussian"):
        print(f"\n== indexed search, {n:,} x {dim}, {data} data ==", flush=True)
        cell = work / f"ann-{data}"
        cell.mkdir(parents=True, exist_ok=True)
        make = clustered if data == "clustered" else gaussian
        q = make(args.ann_queries, dim, seed=1)  # held out: other draws of the same distribution
        np.save(cell / "q.npy", q)
        if data == "gaussian" and exact_memory is not None:
            path = exact_memory  # the exact-search memory: the same data, seed 0
        else:
            path = cell / "bench.mem"
            x = make(n, dim, seed=0)
            make_memory(path, x)
            del x
        # exact neighbours and exact single-query latency, from memstore's exact search
        ex = run_worker("memstore", memory=path, queries=cell / "q.npy", out_dir=cell,
                        batches=[1, len(q)])
        np.save(cell / "truth.npy", np.load(cell / f"memstore-{len(q)}.npy"))
        np.save(cell / "exact_single_s.npy", np.array(ex["batches"]["1"]["s"]))
        out[data] = {"exact": ex, "indexes": run_worker("ann", memory=path, queries=cell / "q.npy", out_dir=cell,
                                                        index_types=args.index_types)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="rows, comma-separated")
    ap.add_argument("--dims", default="512,1280", help="dimensions, comma-separated")
    ap.add_argument("--ann-rows", type=int, default=1_000_000, help="rows of the ANN benchmark (512-d)")
    ap.add_argument("--ann-queries", type=int, default=ANN_QUERIES)
    ap.add_argument("--index-types", nargs="+", default=list(INDEX_TYPES))
    ap.add_argument("--no-ann", action="store_true", help="exact search only")
    ap.add_argument("--no-lancedb", action="store_true", help="leave out the (slow) LanceDB brute force")
    ap.add_argument("--lance-budget", type=float, default=40.0,
                    help="seconds a LanceDB 1024 batch may take before it is extrapolated")
    ap.add_argument("--quick", action="store_true", help="small sanity run: 20k x 64/512, ANN on 20k")
    ap.add_argument("--workdir", default=None, help="where to write the data (default: a temp dir)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    # worker mode (internal)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    for name in ("memory", "vectors", "lance", "queries", "out-dir"):
        ap.add_argument("--" + name, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)

    if args.quick:
        args.sizes, args.dims, args.ann_rows, args.ann_queries = "20000", "64,512", 20_000, 200
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="memstore-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    r = {"k": K, "metric": "cosine", "batches": list(args.batches), "environment": environment(), "exact": [],
         "command": " ".join([Path(sys.executable).name, *sys.argv])}
    print(json.dumps(r["environment"]), flush=True)
    with Others() as others:
        for dim in dims:
            for n in sizes:
                r["exact"].append(exact_run(n, dim, args, work))
        if not args.no_ann:
            exact_memory = work / f"{args.ann_rows}x512" / "bench.mem"
            r["ann"] = ann_run(args.ann_rows, 512, args, work, exact_memory if exact_memory.exists() else None)
            r["ann_rows"] = args.ann_rows
    r["others_cpu_share"] = others.share
    r["runtime_s"] = time.perf_counter() - started
    from memstore.index import ANN_AUTO_ROWS, SCHEDULE, default_params

    r["defaults"] = {"ANN_AUTO_ROWS": ANN_AUTO_ROWS, "SCHEDULE": SCHEDULE,
                     "IVF_PQ": default_params(args.ann_rows, 512, "IVF_PQ"),
                     "IVF_HNSW_SQ": default_params(args.ann_rows, 512, "IVF_HNSW_SQ")}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "search-quick" if args.quick else f"search-{args.sizes.replace(',', '_')}x{args.dims.replace(',', '_')}"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table(r))
    print(table(r))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def table(r: dict) -> str:
    env = r["environment"]
    lines = [
        f"# memstore search benchmark (cosine, k={r['k']})", "",
        f"CPU: {env['cpu']}, {env['cpus']} cores; torch threads {env['torch_threads']}, faiss threads "
        f"{env['faiss_threads']}; {env['memory_gib']} GiB RAM. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Run time {r['runtime_s'] / 60:.1f} min; other processes took {100 * r['others_cpu_share']:.0f}% of the "
        f"CPU time meanwhile. Command: `{r['command']}`.", "",
        "## Exact search", "",
        "Time per batch (median of repeats; batch 1: median of single queries). Ratio: the peer's time over "
        "memstore's (> 1: memstore is faster). Agreement: share of memstore's neighbours the peer also returned. "
        "% matmul: memstore's rate (2 n_q N D / time) over the machine's matmul rate, the faster of a "
        "4096^3 torch (MKL) and numpy (OpenBLAS) matmul measured just before.", "",
        "| data | batch | memstore ms | GFLOP/s | % matmul | numpy ms (ratio, agree) | faiss ms (ratio, agree) "
        "| lancedb ms (ratio, agree) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in r["exact"]:
        mm = e["matmul"]
        ms = e["methods"]["memstore"]
        for b in r["batches"]:
            ours = ms["batches"][str(b)]
            cells = []
            for peer in ("numpy", "faiss", "lancedb"):
                m = e["methods"].get(peer)
                if m is None or str(b) not in m["batches"]:
                    cells.append("-")
                    continue
                t = m["batches"][str(b)]
                agree = m["agreement"].get(str(b))
                extra = "extrapolated, " if "extrapolated_from" in t else ""
                cells.append(f"{t['s'] * 1e3:,.1f} ({t['s'] / ours['s']:.2f}x, {extra}"
                             f"{'-' if agree is None else f'{agree:.4f}'})")
            lines.append(
                f"| {e['rows']:,} x {e['dim']} | {b} | {ours['s'] * 1e3:,.1f} | {ours['gflops']:.0f} | "
                f"{100 * ours['gflops'] / max(mm['torch_gflops'], mm['numpy_gflops']):.0f}%"
                f" | " + " | ".join(cells) + " |")
    lines += ["", "| data | add (s) | load vectors into RAM (s): memstore / numpy / faiss | matmul 4096^3 GFLOP/s: "
              "torch / numpy |", "|---|---|---|---|"]
    for e in r["exact"]:
        m = e["methods"]
        lines.append(f"| {e['rows']:,} x {e['dim']} | {e['add_s']:.1f} | {m['memstore']['load_s']:.2f} / "
                     f"{m['numpy']['load_s']:.2f} / {m['faiss']['load_s']:.2f} | {e['matmul']['torch_gflops']:.0f} / "
                     f"{e['matmul']['numpy_gflops']:.0f} |")
    if "ann" in r:
        lines += ["", f"## Indexed search, {r['ann_rows']:,} x 512", "",
                  "mem.create_index(index_type) with memstore's defaults, tuned to recall@10 >= 0.95 on 200 of the "
                  "memory's own rows; recall@10 here is of held-out queries against exact search. Speed-up: exact "
                  "single-query time over indexed single-query time.", "",
                  "| data | index | partitions / sub-vectors | build s | nprobes | refine | recall@10 own rows | "
                  "recall@10 held-out | single query ms | exact single ms | speed-up | batched ms/query |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for data, d in r["ann"].items():
            for it, a in d["indexes"].items():
                lines.append(
                    f"| {data} | {it} | {a['num_partitions']} / {a['num_sub_vectors'] or '-'} | "
                    f"{a['build_seconds']:.0f} | {a['nprobes']} | {a['refine_factor']} | {a['recall']:.3f} | "
                    f"{a['heldout_recall']:.3f} | {a['single_ms']:.2f} | {a['exact_single_ms']:.1f} | "
                    f"{a['speedup_vs_exact_single']:.1f}x | {a['batch_ms_per_query']:.2f} |")
        d = r["defaults"]
        lines += ["", f"Defaults: ANN_AUTO_ROWS = {d['ANN_AUTO_ROWS']:,}; SCHEDULE (nprobes, refine_factor) = "
                  f"{list(map(tuple, d['SCHEDULE']))}; IVF_PQ {d['IVF_PQ']}; IVF_HNSW_SQ {d['IVF_HNSW_SQ']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""A memory over its life: many small writes, and what reads, writes and the disk cost as it ages.

    python benchmarks/bench_lifetime.py                                  # 100k x 128, 10,000 writes
    python benchmarks/bench_lifetime.py --rows 10000 --dim 32 --writes 2000 --at 0,100,500,1000,2000
    python benchmarks/bench_lifetime.py --fresh-baselines benchmarks/results/lifetime-100000x128-100000.json
    python benchmarks/bench_lifetime.py --aged /tmp/lifetime-xyz/life.mem   # the memory a run left

A memory of ``--rows`` x ``--dim`` is built by one add, then takes ``--writes``
small writes, alternating an add of 10 rows and a reweight of 10 random rows
(each write one memory version, as a user's would be). At each checkpoint it
measures, on a new handle as a new process would see it: open, a cold
``count(*)``, a query on a provenance column, ``versions()``; the mean latency of the
last 100 writes; and the files and bytes under the
memory's directory, beside the bytes of the live vectors. The adds grow the
memory (600,000 rows after 100,000 writes), so ``--fresh-baselines`` then
measures the same reads on a fresh memory of each checkpoint's rows, built by
one add: the ratio to it is what the history costs.

Writes JSON and a Markdown table to benchmarks/results/lifetime-<rows>x<dim>-<writes>.{json,md}.
Run it with ``PYTHONPATH=<another checkout>`` to measure that code the same way.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import memstore
from bench_store import timed, write_results  # timed: median seconds of `repeat` calls, and the last result
from memstore.optimize import disk_usage

RESULTS = Path(__file__).resolve().parent / "results"
#: calls of each read at a checkpoint (the median is reported)
REPEAT = 3


def reads(path: Path) -> dict:
    """What a reader opening the memory now pays: each on a fresh handle."""
    open_s, mem = timed(lambda: memstore.open(path), REPEAT)
    count_s, n = timed(lambda: memstore.open(path).sql("SELECT count(*) FROM samples").fetchall()[0][0], REPEAT)
    prov_s, _ = timed(lambda: memstore.open(path).sql(
        "SELECT split, count(*) FROM samples WHERE uri LIKE 'img/1%' GROUP BY split").fetchall(), REPEAT)
    versions_s, versions = timed(lambda: memstore.open(path).versions(), REPEAT)
    return {"open_ms": open_s * 1e3, "cold_count_ms": count_s * 1e3, "provenance_query_ms": prov_s * 1e3,
            "versions_ms": versions_s * 1e3, "rows": n, "versions": versions.num_rows,
            "version": mem.version}


def fresh_memory(path: Path, rows: int, dim: int, rng, message: str | None = None) -> memstore.Memory:
    """A memory of ``rows`` random vectors with labels and provenance, made by one add: no history."""
    mem = memstore.open(path)
    mem.add(rng.standard_normal((rows, dim)).astype(np.float32), rng.integers(0, 10, rows),
            provenance={"uri": [f"img/{i}.jpg" for i in range(rows)], "split": "train"}, message=message)
    return mem


def fresh_baselines(result_file: Path, workdir: Path | None) -> dict:
    """Add to each checkpoint of a finished run the reads of a fresh memory with as many rows.

    A memory that took 100,000 writes holds 600,000 rows, and a count over
    600,000 rows costs more than over 100,000 however well the memory is
    kept; against a fresh memory of the same rows (one add, no history) the
    ratio measures what the history costs, and nothing else.
    """
    result = json.loads(result_file.read_text())
    rng = np.random.default_rng(1)
    for point in result["points"]:
        root = Path(tempfile.mkdtemp(dir=workdir, prefix="lifetime-fresh-"))
        try:
            fresh_memory(root / "fresh.mem", point["rows"], result["dim"], rng)
            point["fresh_same_rows"] = reads(root / "fresh.mem")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps({"rows": point["rows"], **point["fresh_same_rows"]}), flush=True)
    write_results(result_file.with_suffix(""), result, markdown, indent=1)
    return result


def aged_against_fresh(aged: Path, workdir: Path | None, writes: int = 100) -> dict:
    """Reads and write latency of an aged memory and of a fresh one of as many rows, back to back.

    Both under the same load at the same time, so a busy machine cannot pass
    for the history's cost. The writes go to a copy of the aged memory.
    """
    root = Path(tempfile.mkdtemp(dir=workdir, prefix="lifetime-aged-"))
    try:
        shutil.copytree(aged, root / "aged.mem")
        mem = memstore.open(root / "aged.mem")
        n, dim = len(mem), mem.dim
        rng = np.random.default_rng(2)
        fresh = fresh_memory(root / "fresh.mem", n, dim, rng)
        out = {"rows": n, "versions": mem.version}
        for name, m in (("aged", mem), ("fresh", fresh)):
            out[name] = reads(m.path)
            start = time.perf_counter()
            for step in range(writes):
                write(m, rng, step, dim)
            out[name]["write_ms"] = 1e3 * (time.perf_counter() - start) / writes
        print(json.dumps(out), flush=True)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write(mem, rng, step: int, dim: int) -> None:
    if step % 2 == 0:
        x = rng.standard_normal((10, dim)).astype(np.float32)
        mem.add(x, rng.integers(0, 10, 10), provenance={"uri": [f"img/new-{step}-{i}" for i in range(10)],
                                                         "split": "stream"}, message=f"write {step}")
    else:
        ids = rng.choice(len(mem), 10, replace=False)
        mem.reweight(_weights(ids, rng), message=f"write {step}")


def _weights(ids, rng):
    import pyarrow as pa

    return pa.table({"id": pa.array(ids, pa.int64()), "weight": pa.array(rng.uniform(0.1, 2, len(ids)),
                                                                         pa.float32())})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--writes", type=int, default=10_000)
    ap.add_argument("--at", default=None, help="checkpoints, comma-separated (default 0,100,1k,10k,...)")
    ap.add_argument("--label", default="", help="a name for the code measured (e.g. before/after)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--fresh-baselines", type=Path, default=None, metavar="RESULT_JSON",
                    help="measure, for each checkpoint of a finished run, a fresh memory of as many rows")
    ap.add_argument("--aged", type=Path, default=None, metavar="MEMORY",
                    help="compare a memory left by a run with a fresh one of as many rows, back to back")
    args = ap.parse_args(argv)
    if args.aged:
        result = aged_against_fresh(args.aged, args.workdir)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"lifetime-aged-{result['versions']}.json").write_text(json.dumps(result, indent=1) + "\n")
        return result
    if args.fresh_baselines:
        result = fresh_baselines(args.fresh_baselines, args.workdir)
        print(markdown(result))
        return result
    at = sorted({int(a) for a in args.at.split(",")}) if args.at else \
        [c for c in (0, 100, 1000, 10_000, 100_000) if c <= args.writes]
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(dir=args.workdir, prefix="lifetime-"))
    path = root / "life.mem"
    mem = fresh_memory(path, args.rows, args.dim, rng, message="first batch")
    vector_bytes = args.rows * args.dim * 4
    points, done, latencies = [], 0, []
    for checkpoint in at:
        while done < checkpoint:
            start = time.perf_counter()
            write(mem, rng, done, args.dim)
            latencies.append(time.perf_counter() - start)
            done += 1
        files, size = disk_usage(path)
        live_vectors = (args.rows + 10 * ((done + 1) // 2)) * args.dim * 4
        window = latencies[-min(100, len(latencies)):] if latencies else []
        point = {"writes": done, **reads(path), "files": files, "bytes": size,
                 "bytes_per_live_vector_byte": size / live_vectors,
                 "write_ms_last_100": 1e3 * statistics.mean(window) if window else None}
        points.append(point)
        print(json.dumps(point), flush=True)
        result = save(args, vector_bytes, latencies, points)  # at every checkpoint: a long run stopped early still reports
    print(markdown(result))
    return result


def save(args, vector_bytes: int, latencies: list, points: list) -> dict:
    first = latencies[:100]
    result = {"label": args.label, "rows": args.rows, "dim": args.dim, "writes": args.writes,
              "vector_bytes": vector_bytes, "first_100_writes_ms": 1e3 * statistics.mean(first) if first else None,
              "points": points, "machine": platform.processor() or platform.machine(),
              "memstore": memstore.__file__}
    stem = f"lifetime-{args.rows}x{args.dim}-{args.writes}{'-' + args.label if args.label else ''}"
    write_results(RESULTS / stem, result, markdown, indent=1)
    return result


def markdown(result: dict) -> str:
    """Each read beside the fresh memory: the same memory at 0 writes, or (where measured, marked
    "same rows") a fresh memory holding as many rows as the aged one."""
    head = ("| writes | rows | open ms | cold count(*) ms | provenance query ms | versions() ms | write ms (last 100) "
            "| files | MB on disk | disk / live vectors |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for p in result["points"]:
        fresh = p.get("fresh_same_rows", result["points"][0])
        ratio = lambda key: f"{p[key]:.1f} ({p[key] / fresh[key]:.1f}x)"  # noqa: E731
        write_ms = "" if p["write_ms_last_100"] is None else f"{p['write_ms_last_100']:.0f}"
        rows.append(f"| {p['writes']:,} | {p['rows']:,} | {ratio('open_ms')} | {ratio('cold_count_ms')} | "
                    f"{ratio('provenance_query_ms')} | {ratio('versions_ms')} | {write_ms} | {p['files']:,} | "
                    f"{p['bytes'] / 1e6:.1f} | {p['bytes_per_live_vector_byte']:.2f}x |")
    same = all("fresh_same_rows" in p for p in result["points"])
    title = (f"{result['rows']:,} x {result['dim']} memory, {result['writes']:,} writes (adds of 10 rows and "
             f"reweights of 10 rows, alternating){' — ' + result['label'] if result['label'] else ''}; "
             f"ratios against {'a fresh memory of as many rows' if same else 'the memory at 0 writes'}\n\n")
    return title + head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()

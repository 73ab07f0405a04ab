"""Choosing FRAGMENT_ROWS: what the size of a data fragment costs reads, and what it costs a forget.

    python benchmarks/bench_fragments.py                       # 2,000,000 x 128, five sizes (~6 min)
    python benchmarks/bench_fragments.py --rows 500000 --sizes 16384,131072

A forget rewrites every fragment that held a forgotten row, so small fragments
make it cheap; but every fragment is a file to open and a unit Lance schedules,
so many small ones slow every read. For each size, a memory of ``--rows`` x
``--dim`` is built by adds of 100,000 rows with ``memstore.optimize.FRAGMENT_ROWS``
set to it and optimized (so its fragments have that size), then measured on
fresh handles: open, a cold ``count(*)``, a GROUP BY over every row, loading
every vector (``KNNClassifier.fit``) and classifying 64 queries, and forgets
of 1 and 100 random rows (seconds and bytes of data rewritten).

Writes benchmarks/results/fragments-<rows>x<dim>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import memstore
from bench_store import timed, write_results  # timed: median seconds of `repeat` calls, and the last result
from memstore import optimize

RESULTS = Path(__file__).resolve().parent / "results"
ADD_ROWS = 100_000


def data_bytes(path: Path) -> dict[str, int]:
    folder = path / "tables" / "sample_data.lance" / "data"
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def measure(path: Path, rows: int, dim: int, fragment_rows: int, rng) -> dict:
    optimize.FRAGMENT_ROWS = fragment_rows
    mem = memstore.open(path)
    start = time.perf_counter()
    for lo in range(0, rows, ADD_ROWS):
        n = min(ADD_ROWS, rows - lo)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        mem.add(x, rng.integers(0, 100, n), provenance={"split": "train"})
    mem.optimize()  # adds of 100,000 rows leave fragments of 100,000: merged to the size measured
    build_s = time.perf_counter() - start
    queries = rng.standard_normal((64, dim), dtype=np.float32)
    open_s, _ = timed(lambda: memstore.open(path), 3)
    count_s, _ = timed(lambda: memstore.open(path).sql("SELECT count(*) FROM samples").fetchall(), 3)
    group_s, _ = timed(lambda: memstore.open(path).sql(
        "SELECT label, count(*), avg(weight) FROM samples GROUP BY label").fetchall(), 3)
    fit_s, clf = timed(lambda: memstore.KNNClassifier(k=10).fit(memstore.open(path)), 3)
    predict_s, _ = timed(lambda: clf.predict(queries), 3)
    forgets = {}
    for count in (1, 100):
        before = data_bytes(path)
        t = time.perf_counter()
        mem.forget(rng.choice(len(mem), count, replace=False))
        seconds = time.perf_counter() - t
        written = sum(b for name, b in data_bytes(path).items() if name not in before)
        forgets[count] = {"seconds": seconds, "data_bytes_written": written}
    return {"fragment_rows": fragment_rows, "fragments": len(before), "build_s": build_s,
            "open_ms": open_s * 1e3, "cold_count_ms": count_s * 1e3, "group_by_ms": group_s * 1e3,
            "fit_s": fit_s, "predict_64_ms": predict_s * 1e3, "forget": forgets}


def markdown(result: dict) -> str:
    lines = [f"FRAGMENT_ROWS against reads and forgets: {result['rows']:,} x {result['dim']} memory built by adds "
             f"of {ADD_ROWS:,} rows and optimized; command `{result['command']}`", "",
             "| fragment rows | fragments | open ms | cold count(*) ms | GROUP BY ms | load vectors s | classify 64 ms "
             "| forget 1 row s (MB rewritten) | forget 100 rows s (MB rewritten) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        f1, f100 = p["forget"]["1"], p["forget"]["100"]
        lines.append(f"| {p['fragment_rows']:,} | {p['fragments']} | {p['open_ms']:.0f} | {p['cold_count_ms']:.0f} | "
                     f"{p['group_by_ms']:.0f} | {p['fit_s']:.2f} | {p['predict_64_ms']:.0f} | "
                     f"{f1['seconds']:.2f} ({f1['data_bytes_written'] / 1e6:.0f}) | "
                     f"{f100['seconds']:.1f} ({f100['data_bytes_written'] / 1e6:.0f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--sizes", default="16384,32768,65536,131072,262144")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    result = {"rows": args.rows, "dim": args.dim, "points": [], "default": optimize.FRAGMENT_ROWS,
              "command": "bench_fragments.py " + " ".join(argv or []),
              "machine": platform.processor() or platform.machine()}
    for size in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp(dir=args.workdir, prefix="fragments-"))
        try:
            point = measure(root / "m.mem", args.rows, args.dim, size, np.random.default_rng(0))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        point["forget"] = {str(k): v for k, v in point["forget"].items()}
        result["points"].append(point)
        print(json.dumps(point), flush=True)
    write_results(RESULTS / f"fragments-{args.rows}x{args.dim}", result, markdown, indent=1)
    print(markdown(result))
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

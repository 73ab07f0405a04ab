"""How long forgetting takes: 1, 100 and 10,000 rows out of a 1,000,000-row memory.

The memory is built the way memories grow: --adds adds of equal size (ten by
default, so ten Lance fragments), then a prune and a reweight so that old
versions hold state worth keeping. Then, one after another, ``mem.forget`` of
1, 100 and 10,000 rows drawn at random from the whole memory, each timed by
phase (ForgetReport.seconds). After each, the benchmark checks what forget
claims, independently of it: the rows are in no version, and Lance keeps one
version of each table. Bytes on disk before and after are reported too.

With --index, an IVF_PQ index is built first (memstore's defaults), and the
forgets also remap it; --rebuild-index trains it again each time.

    python benchmarks/bench_forget.py                 # 1,000,000 x 512 (~10 min, ~6 GB of disk)
    python benchmarks/bench_forget.py --rows 100000   # a quicker run

Writes benchmarks/results/forget-<rows>x<dim>.json and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lance
import numpy as np

import memstore

COUNTS = (1, 100, 10_000)


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def file_sizes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def rewrite_floor(mem, ids: np.ndarray, work: Path) -> tuple[float, int]:
    """Seconds to copy (read, write, fsync) the data files that hold ``ids``: what any erasure must rewrite.

    Lance files are immutable, so erasing a row means writing its fragment
    again without it; a forget can cost no less than this copy.
    """
    from memstore.forget import Holders, fragments_of, rows_to_forget

    data = lance.dataset(mem.path / "tables" / "sample_data.lance")
    held = sorted(Holders.of(data, fragments_of(rows_to_forget(data, ids)["_rowaddr"].to_numpy())).held)
    scratch = work / "floor"
    scratch.mkdir(exist_ok=True)
    t = time.perf_counter()
    for i, rel in enumerate(held):
        target = scratch / str(i)
        shutil.copyfile(mem.path / rel, target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
    seconds = time.perf_counter() - t
    size = sum(p.stat().st_size for p in scratch.iterdir())
    shutil.rmtree(scratch)
    return seconds, size


def build(path: Path, rows: int, dim: int, adds: int, seed: int) -> memstore.Memory:
    rng = np.random.default_rng(seed)
    mem = memstore.open(path)
    per = rows // adds
    for a in range(adds):
        n = per if a < adds - 1 else rows - per * (adds - 1)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        mem.add(x, rng.integers(0, 1000, n), provenance={"split": "train"}, message=f"add {a}")
    mem.tag("full")
    mem.prune("SELECT id FROM samples WHERE id % 1000 = 7", message="prune some")
    mem.reweight("SELECT id, 0.5 AS weight FROM samples WHERE label < 100", message="reweight some")
    return mem


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--adds", type=int, default=10)
    ap.add_argument("--index", action="store_true", help="build an IVF_PQ index first")
    ap.add_argument("--rebuild-index", action="store_true", help="retrain the index at each forget")
    ap.add_argument("--workdir", help="where the memory is built (default: a temporary directory)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--label", default="", help="a name for the code measured (before/after), in the file name")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="bench-forget-"))
    result = {"rows": args.rows, "dim": args.dim, "adds": args.adds, "index": args.index, "label": args.label,
              "memstore": memstore.__file__,
              "rebuild_index": args.rebuild_index, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "cpu": platform.processor() or platform.machine(), "forgets": []}
    try:
        t = time.perf_counter()
        mem = build(work / "m.mem", args.rows, args.dim, args.adds, seed=0)
        result["build_s"] = time.perf_counter() - t
        print(f"built {args.rows:,} x {args.dim} in {result['build_s']:.1f} s", flush=True)
        if args.index:
            t = time.perf_counter()
            report = mem.create_index("IVF_PQ")
            result["index_s"] = time.perf_counter() - t
            result["index_recall"] = report.recall
            print(f"IVF_PQ index in {result['index_s']:.1f} s, recall@10 {report.recall:.3f}", flush=True)
        result["bytes_before"] = disk_bytes(mem.path)
        rng = np.random.default_rng(1)
        ever = np.arange(args.rows)
        forgotten = np.zeros(0, np.int64)
        for count in COUNTS:
            ids = rng.choice(np.setdiff1d(ever, forgotten), count, replace=False)
            before = disk_bytes(mem.path)
            files_before = file_sizes(mem.path)
            floor_s, held_bytes = rewrite_floor(mem, ids, work)
            t = time.perf_counter()
            report = mem.forget(ids, message=f"bench: {count} rows", rebuild_index=args.rebuild_index)
            wall = time.perf_counter() - t
            forgotten = np.union1d(forgotten, ids)
            # check what forget claims, independently: no version holds the rows ...
            for v in (0, 1, args.adds, mem.version):
                held = np.intersect1d(mem.at(v).samples.ids, forgotten)
                assert not len(held), f"version {v} still holds {held[:5]}"
            # ... and Lance keeps no older version of any table
            for table in (mem.path / "tables").iterdir():
                assert len(lance.dataset(table).versions()) == 1, table
            written = {p: b for p, b in file_sizes(mem.path).items() if p not in files_before}
            row = {"rows": count, "seconds": wall, "phases": report.seconds,
                   "rewrite_floor_s": floor_s, "held_data_bytes": held_bytes,
                   "bytes_scanned": report.bytes_scanned, "files_scanned": report.files_scanned,
                   "bytes_written": sum(written.values()), "files_written": len(written),
                   "data_bytes_written": sum(b for p, b in written.items() if p.startswith("tables/sample_data.lance/data/")),
                   "disk_before": before, "disk_after": disk_bytes(mem.path)}
            result["forgets"].append(row)
            print(f"forget {count:>6,} rows: {wall:6.1f} s  {report.seconds}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(result, Path(args.out))
    return result


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (f"forget-{result['rows']}x{result['dim']}{'-index' if result['index'] else ''}"
                  + (f"-{result['label']}" if result.get("label") else ""))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    phases = list(result["forgets"][0]["phases"])
    lines = [
        f"# memstore forget benchmark, {result['rows']:,} x {result['dim']}", "",
        f"Memory built by {result['adds']} adds, a prune and a reweight"
        + (", with an IVF_PQ index" if result["index"] else "") + f"; command `{result['command']}`.",
        "Each forget erases rows drawn at random from the whole memory, compacts, drops every old Lance "
        "version, and scans the memory's files for the forgotten vectors' bytes before it returns. "
        "Beside it, a plain copy (read, write, fsync) of the data files that held the rows: the least any "
        "erasure must rewrite.", "",
        "| rows forgotten | total s | " + " | ".join(f"{p} s" for p in phases)
        + " | GB written (data) | GB scanned | GB on disk after | copy of the files that held the rows s (GB) "
        "| forget / copy |",
        "|---|---|" + "---|" * len(phases) + "---|---|---|---|---|",
    ]
    for f in result["forgets"]:
        lines.append(f"| {f['rows']:,} | {f['seconds']:.1f} | " + " | ".join(f"{f['phases'][p]:.1f}" for p in phases)
                     + f" | {f['bytes_written'] / 1e9:.3f} ({f['data_bytes_written'] / 1e9:.3f}) | "
                     f"{f['bytes_scanned'] / 1e9:.3f} | {f['disk_after'] / 1e9:.2f} | "
                     f"{f['rewrite_floor_s']:.1f} ({f['held_data_bytes'] / 1e9:.3f}) | "
                     f"{f['seconds'] / max(f['rewrite_floor_s'], 1e-3):.1f}x |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

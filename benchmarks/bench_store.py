"""The memory store against bare LanceDB and DuckDB, side by side in one run.

Measures, on N x D float32 vectors with labels and provenance:
  add      rows/s of mem.add vs a bare lancedb table.add of the same Arrow data
  sql      SELECT label, count(*), avg(weight) FROM samples GROUP BY label:
           mem.sql vs DuckDB over the same data as an in-memory Arrow table
  open     memstore.open(path).version
  disk     bytes per row vs the raw vector bytes
  reweight / relabel every row: time and disk growth, vs a LanceDB update of
           the same column on the bare table (which rewrites every vector)

    python benchmarks/bench_store.py                 # 1,000,000 x 512 (~4 GB of disk, ~3 min)
    python benchmarks/bench_store.py --rows 100000   # quicker

Writes benchmarks/results/store-<rows>x<dim>.json and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import lancedb
import numpy as np
import pyarrow as pa

import memstore

QUERY = "SELECT label, count(*), avg(weight) FROM samples GROUP BY label"


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_results(stem: Path, result: dict, markdown, *, indent: int = 2) -> None:
    """``stem``.json holding ``result`` and ``stem``.md holding ``markdown(result)``, in benchmarks/results/."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=indent) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))


def timed(fn, repeat=1):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def make_data(n: int, dim: int, n_labels: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    labels = np.char.add("class_", rng.integers(0, n_labels, n).astype(str))
    return pa.table({
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim),
        "label": pa.array(labels),
        "weight": pa.array(np.ones(n, np.float32)),
        "uri": pa.array(np.char.add("s3://bucket/images/", np.arange(n).astype(str))),
        "split": pa.array(np.where(rng.random(n) < 0.9, "train", "val")),
        "dataset": pa.array(np.full(n, "synthetic")),
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--workdir", default=None, help="where to write the memories (default: a temp dir)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="memstore-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"making {args.rows:,} x {args.dim} vectors ...", flush=True)
    data = make_data(args.rows, args.dim, args.labels)
    vector_bytes = args.rows * args.dim * 4
    r: dict = {"rows": args.rows, "dim": args.dim, "labels": args.labels, "vector_bytes": vector_bytes,
               "versions": {"lancedb": lancedb.__version__, "duckdb": duckdb.__version__,
                            "memstore": memstore.__version__}}

    # -- add ---------------------------------------------------------------
    bare_db = lancedb.connect(str(work / "bare"))
    bare = bare_db.create_table("samples", schema=data.schema)
    r["add_lancedb_s"], _ = timed(lambda: bare.add(data))
    mem = memstore.open(work / "bench.mem")
    r["add_memstore_s"], _ = timed(lambda: mem.add(data, message="benchmark rows", progress=False))
    r["add_lancedb_rows_per_s"] = args.rows / r["add_lancedb_s"]
    r["add_memstore_rows_per_s"] = args.rows / r["add_memstore_s"]
    r["add_ratio"] = r["add_memstore_rows_per_s"] / r["add_lancedb_rows_per_s"]
    print(f"add: memstore {r['add_memstore_rows_per_s']:,.0f} rows/s, lancedb {r['add_lancedb_rows_per_s']:,.0f}"
          f" rows/s ({r['add_ratio']:.2f}x)", flush=True)

    # -- open ----------------------------------------------------------------
    r["open_s"], _ = timed(lambda: memstore.open(work / "bench.mem").version, repeat=5)

    # -- sql -------------------------------------------------------------------
    con = duckdb.connect()
    con.register("samples", data)
    r["sql_duckdb_arrow_s"], expected = timed(lambda: sorted(con.sql(QUERY).fetchall()), repeat=7)
    fresh = memstore.open(work / "bench.mem")
    r["sql_memstore_cold_s"], got = timed(lambda: sorted(fresh.sql(QUERY).fetchall()))
    r["sql_memstore_s"], got = timed(lambda: sorted(fresh.sql(QUERY).fetchall()), repeat=7)
    assert [g[:2] for g in got] == [e[:2] for e in expected], "memstore and duckdb disagree"
    r["sql_ratio"] = r["sql_memstore_s"] / r["sql_duckdb_arrow_s"]
    q2 = "SELECT split, count(*) FROM samples WHERE uri LIKE '%7' GROUP BY split"
    r["sql_provenance_duckdb_arrow_s"], _ = timed(lambda: con.sql(q2).fetchall(), repeat=5)
    r["sql_provenance_memstore_s"], _ = timed(lambda: fresh.sql(q2).fetchall(), repeat=5)
    print(f"sql: memstore {r['sql_memstore_s']*1e3:.1f} ms (cold {r['sql_memstore_cold_s']*1e3:.0f} ms), "
          f"duckdb/arrow {r['sql_duckdb_arrow_s']*1e3:.1f} ms ({r['sql_ratio']:.2f}x)", flush=True)

    # -- disk ------------------------------------------------------------------
    size = du(work / "bench.mem")
    r["disk_bytes"] = size
    r["disk_bytes_per_row"] = size / args.rows
    r["disk_ratio_to_vectors"] = size / vector_bytes
    r["disk_lancedb_bytes"] = du(work / "bare")
    print(f"disk: {r['disk_bytes_per_row']:.0f} B/row = {r['disk_ratio_to_vectors']:.3f}x the vector bytes",
          flush=True)

    # -- reweight / relabel every row -----------------------------------------------
    before = du(work / "bench.mem")
    r["reweight_all_s"], _ = timed(lambda: mem.reweight("SELECT id, 0.5 AS weight FROM samples"))
    r["reweight_growth_bytes"] = du(work / "bench.mem") - before
    before = du(work / "bench.mem")
    r["relabel_all_s"], _ = timed(lambda: mem.relabel(
        "SELECT id, 'coarse_' || (CAST(substr(label, 7) AS INTEGER) // 10) AS label FROM samples"))
    r["relabel_growth_bytes"] = du(work / "bench.mem") - before
    r["reweight_growth_pct_of_vectors"] = 100 * r["reweight_growth_bytes"] / vector_bytes
    r["relabel_growth_pct_of_vectors"] = 100 * r["relabel_growth_bytes"] / vector_bytes
    before = du(work / "bare")
    r["reweight_all_lancedb_update_s"], _ = timed(lambda: bare.update(values={"weight": 0.5}))
    r["reweight_lancedb_update_growth_bytes"] = du(work / "bare") - before
    r["reweight_lancedb_update_growth_pct_of_vectors"] = 100 * r["reweight_lancedb_update_growth_bytes"] / vector_bytes
    assert fresh.refresh().sql("SELECT avg(weight) FROM samples").fetchall()[0][0] == 0.5
    print(f"reweight all: {r['reweight_all_s']:.1f} s, +{r['reweight_growth_pct_of_vectors']:.2f}% "
          f"(lancedb update: {r['reweight_all_lancedb_update_s']:.1f} s, "
          f"+{r['reweight_lancedb_update_growth_pct_of_vectors']:.1f}%); relabel all: {r['relabel_all_s']:.1f} s, "
          f"+{r['relabel_growth_pct_of_vectors']:.2f}%", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"store-{args.rows}x{args.dim}"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table(r))
    print(table(r))
    shutil.rmtree(work, ignore_errors=True)


def table(r: dict) -> str:
    mb = 1e6
    rows = [
        ("add (rows/s)", f"{r['add_memstore_rows_per_s']:,.0f}", f"lancedb add {r['add_lancedb_rows_per_s']:,.0f}",
         f"{r['add_ratio']:.2f}x", ">= 0.8x"),
        ("sql group-by (ms)", f"{r['sql_memstore_s']*1e3:.1f} (cold {r['sql_memstore_cold_s']*1e3:.0f})",
         f"duckdb/arrow {r['sql_duckdb_arrow_s']*1e3:.1f}", f"{r['sql_ratio']:.2f}x", "<= 2x"),
        ("sql on provenance (ms)", f"{r['sql_provenance_memstore_s']*1e3:.1f}",
         f"duckdb/arrow {r['sql_provenance_duckdb_arrow_s']*1e3:.1f}",
         f"{r['sql_provenance_memstore_s']/r['sql_provenance_duckdb_arrow_s']:.2f}x", ""),
        ("open (ms)", f"{r['open_s']*1e3:.0f}", "", "", "< 1000"),
        ("disk (bytes/row)", f"{r['disk_bytes_per_row']:.0f}", f"vectors {r['dim']*4}",
         f"{r['disk_ratio_to_vectors']:.3f}x", "<= 1.15x + metadata"),
        ("reweight all (s, growth)", f"{r['reweight_all_s']:.1f}, +{r['reweight_growth_bytes']/mb:.0f} MB",
         f"lancedb update {r['reweight_all_lancedb_update_s']:.1f}, "
         f"+{r['reweight_lancedb_update_growth_bytes']/mb:.0f} MB",
         f"{r['reweight_growth_pct_of_vectors']:.2f}% of vectors", "< 5%"),
        ("relabel all (s, growth)", f"{r['relabel_all_s']:.1f}, +{r['relabel_growth_bytes']/mb:.0f} MB", "",
         f"{r['relabel_growth_pct_of_vectors']:.2f}% of vectors", "< 5%"),
    ]
    head = f"memstore store benchmark, {r['rows']:,} x {r['dim']} float32, {r['labels']} labels\n\n"
    lines = ["| measure | memstore | peer | ratio | goal |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

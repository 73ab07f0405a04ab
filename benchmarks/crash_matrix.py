"""The kill -9 matrix: every write path, at every named point and after random delays.

    python benchmarks/crash_matrix.py [--delays N] [--seed S] [--ops add,forget,...]

For each trial a fresh copy of a small memory (3,000 x 32, one prune; for
"migrate", one made at schema 1) is written to by a child process that is
killed with SIGKILL at a named point of the write (tests/crash_harness.py
POINTS) or after a random delay. Then: open, a write, a forget, a reopen and
``check()`` must give exactly the committed rows plus the new ones, unique
ids, no file of the killed writer left, and no forgotten byte on disk
(``after_the_kill_everything_works``). The tally goes to stdout and to
benchmarks/results/crash_matrix.json; any failed trial makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import memstore  # noqa: E402
from crash_harness import after_the_kill_everything_works, contents, files, run_and_kill  # noqa: E402
from memstore import migrations  # noqa: E402
from memstore.memory import Memory  # noqa: E402
from memstore.versioning import Store  # noqa: E402

ONE_COMMIT = ["commit", "head_record"]
#: the named points each write path passes through
POINTS_OF = {
    "add": ["batch", *ONE_COMMIT],
    "add_images": ONE_COMMIT,
    "reweight": ONE_COMMIT, "relabel": ONE_COMMIT, "prune": ONE_COMMIT, "restore": ONE_COMMIT,
    "set_taxonomy": ONE_COMMIT, "estimate_quality": ONE_COMMIT, "create_index": ONE_COMMIT,
    "tag": [],  # one Lance append, no transaction: random delays only
    "forget": ["pending", "erase", "compact", *ONE_COMMIT, "cleanup", "verify", "clear_pending"],
    "migrate": ["commit#1", "commit#2", "commit#3", "head_record#2"],
    "optimize": ["merge", "merge#4", *ONE_COMMIT, "cleanup"],
}
#: seconds over which the random kills of each write are spread (start-up, open and the write)
SPAN = {"add": 4.0, "add_images": 6.0, "forget": 7.0, "create_index": 5.0, "migrate": 5.0}


def template(folder: Path, schema: int | None) -> Path:
    path = folder / f"template-{schema or 'latest'}.mem"
    rng = np.random.default_rng(0)
    if schema is None:
        mem = memstore.open(path)
    else:
        Store.write_marker(path)
        store = Store(path)
        migrations.create(store, upto=schema)
        mem = Memory(store, store.head())
    mem.add(rng.standard_normal((3000, 32)).astype("f4"), rng.integers(0, 5, 3000).astype(str))
    mem.prune("SELECT id FROM samples WHERE id % 3 = 0")
    return path


def trial(templates: dict, folder: Path, op: str, stop_at: str, delay: float | None, seed: int) -> dict:
    path = folder / f"t{seed}.mem"
    shutil.copytree(templates["migrate" if op == "migrate" else "latest"], path)
    before_files = files(path)
    before = memstore.open(path, read_only=True)
    version, before_rows, tags = before.version, contents(before), before.tags().num_rows
    start = time.perf_counter()
    outcome = {"op": op, "point": stop_at if delay is None else f"delay {delay:.2f}s"}
    try:
        finished = run_and_kill(path, op, stop_at, seed=seed, delay=delay)
        after = memstore.open(path, create=False)  # for "migrate": finishes the migrations
        # a tag is committed by its own Lance append, without a memory version
        committed = after.version > version or after.tags().num_rows > tags
        if op != "migrate" and not committed:
            assert contents(after) == before_rows, "an uncommitted write changed the rows"
        after_the_kill_everything_works(path, before_files, np.random.default_rng(seed),
                                        committed=committed or op == "migrate")
        outcome |= {"result": "ok", "committed": committed, "finished_before_kill": finished}
    except Exception as exc:  # noqa: BLE001 -- a failed trial is the finding
        outcome |= {"result": "FAILED", "error": f"{type(exc).__name__}: {exc}"[:500],
                    "trace": traceback.format_exc()[-1500:]}
    outcome["seconds"] = round(time.perf_counter() - start, 2)
    shutil.rmtree(path, ignore_errors=True)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", type=int, default=12, help="random-delay kills per write path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", default=",".join(POINTS_OF), help="comma-separated write paths")
    args = parser.parse_args()
    ops = args.ops.split(",")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="crash-matrix-") as tmp:
        folder = Path(tmp)
        templates = {"latest": template(folder, None), "migrate": template(folder, 1)}
        plan = [(op, point, None) for op in ops for point in POINTS_OF[op]]
        plan += [(op, "none", float(rng.uniform(0.0, SPAN.get(op, 1.5)))) for op in ops for _ in range(args.delays)]
        results = []
        for i, (op, point, delay) in enumerate(plan):
            row = trial(templates, folder, op, point, delay, seed=args.seed * 100_000 + i)
            results.append(row)
            print(f"{i + 1:>4}/{len(plan)} {row['result']:>6} {op:>16} {row['point']:<16} "
                  f"{'committed' if row.get('committed') else '':<9} {row['seconds']}s"
                  + (f"  {row['error'][:160]}" if row["result"] != "ok" else ""), flush=True)
    tally = Counter((r["op"], r["result"]) for r in results)
    summary = {op: {"trials": sum(n for (o, _), n in tally.items() if o == op),
                    "failed": tally.get((op, "FAILED"), 0),
                    "committed": sum(1 for r in results if r["op"] == op and r.get("committed"))}
               for op in ops}
    out = ROOT / "benchmarks" / "results" / "crash_matrix.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "trials": results}, indent=1) + "\n")
    print("\nop                trials  committed  failed")
    for op, s in summary.items():
        print(f"{op:<16} {s['trials']:>7} {s['committed']:>10} {s['failed']:>7}")
    failed = sum(s["failed"] for s in summary.values())
    print(f"\n{len(results)} trials, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

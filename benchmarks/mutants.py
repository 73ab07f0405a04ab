"""The deliberate-bug check: each protection, switched off, must make the suite fail.

    python benchmarks/mutants.py            # every mutant (about 20 minutes on 2 cores)
    python benchmarks/mutants.py NAME ...   # only these
    make mutants

Each mutant is one small patch (an exact piece of source and its replacement)
applied to a scratch copy of the repository; the tests named with it then run
there, and must fail. A mutant whose tests pass is a protection no test
guards: the script prints the table, writes benchmarks/results/mutants.json
and exits 1. Add a mutant with every guarantee you add.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS = [
    # -- crash recovery (versioning.py) ------------------------------------------------
    Mutant("recovery off", "memstore/versioning.py",
           '        committed = head.lance_versions if head else {}\n',
           '        return\n        committed = head.lance_versions if head else {}\n',
           ("tests/test_crash.py",), "a killed writer's Lance commits are adopted by the next write"),
    Mutant("no recovery before a write", "memstore/versioning.py",
           "        head = self.head()\n        self._recover(head)\n",
           "        head = self.head()\n",
           ("tests/test_crash.py",), "only the failing process rolls back; a killed one never does"),
    Mutant("cleanup keeps only the latest Lance version", "memstore/versioning.py",
           "            keep = {ds.version, named.get(name, ds.version)}\n",
           "            keep = {ds.version}\n",
           ("tests/test_forget.py",), "a forget after a rolled-back write deletes the head's versions"),
    Mutant("cleanup before the forget commits", "memstore/forget.py",
           '        lap("select")\n        erase(tx, ids)\n',
           '        store.cleanup(None)\n        lap("select")\n        erase(tx, ids)\n',
           ("tests/test_forget.py",), "the old bug: cleanup from under the committed head"),
    Mutant("head.json not compared with the audit", "memstore/versioning.py",
           "        if record is not None and audit.version < (record.audit_lance_version or 0):\n",
           "        if False:\n",
           ("tests/test_damage.py",), "a lost audit manifest opens silently at an older version"),
    Mutant("lost tables open as a new memory", "memstore/versioning.py",
           "            if record is not None:\n                raise self._damage(f\"{TABLES_DIR}/{AUDIT_TABLE}.lance\"",
           "            if False:\n                raise self._damage(f\"{TABLES_DIR}/{AUDIT_TABLE}.lance\"",
           ("tests/test_damage.py",), "a memory that lost tables/ is re-created empty"),
    Mutant("head's Lance versions not checked", "memstore/versioning.py",
           "            if latest < version:\n", "            if False:\n",
           ("tests/test_damage.py",), "a lost manifest of a committed table version goes unnoticed"),
    Mutant("disk full not recognised", "memstore/versioning.py",
           '    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):\n        return True\n',
           "    return False\n",
           ("tests/test_disk_full.py", "tests/test_forget.py"), "a full disk surfaces as raw Lance/OS errors"),
    Mutant("rows chosen outside the write lock", "memstore/memory.py",
           "        with self._store.lock():\n            return method(self, *args, **kwargs)\n",
           "        return method(self, *args, **kwargs)\n",
           ("tests/test_concurrency.py",), "a writer's SELECT races another's forget"),
    # -- forget (forget.py) --------------------------------------------------------------
    Mutant("no pending-forget record", "memstore/forget.py",
           "        write_pending(store, tx.version, found[\"id\"].to_numpy(), stored)\n", "",
           ("tests/test_crash.py",), "a forget killed after its commit leaves the bytes on disk"),
    Mutant("interrupted forget not finished", "memstore/forget.py",
           "    pending = read_pending(store)\n    if pending is None:\n        return None\n",
           "    return None\n",
           ("tests/test_crash.py",), "the next open does not finish the forget"),
    Mutant("forget's scan off", "memstore/forget.py",
           "    hits, scanned, skipped = find_vector_bytes(store.path,",
           "    return (0, 0), 0, 0\n    hits, scanned, skipped = find_vector_bytes(store.path,",
           ("tests/test_forget.py",), "forget reports success without looking"),
    # -- damage (check.py) ---------------------------------------------------------------
    Mutant("checksums not compared", "memstore/check.py",
           "            elif sha256_file(path) != want:\n", "            elif False:\n",
           ("tests/test_damage.py",), "flipped bytes in a data file read back silently"),
    Mutant("damaged memory takes writes", "memstore/check.py",
           "    marker = store.path / DAMAGE_FILE\n    if marker.exists():\n",
           "    marker = store.path / DAMAGE_FILE\n    if False:\n",
           ("tests/test_damage.py",), "a write lands on a memory that failed its check"),
    Mutant("no checksums recorded at commit", "memstore/versioning.py",
           "        self._record_checksums()\n", "",
           ("tests/test_damage.py",), "check() has nothing to compare with"),
    # -- the SQL sandbox (sql.py) -------------------------------------------------------
    Mutant("SQL external access on", "memstore/sql.py",
           '    "enable_external_access": False,', '    "enable_external_access": True,',
           ("tests/test_sql_sandbox.py",), "read_csv('/etc/passwd') and COPY TO work"),
    Mutant("SQL configuration unlocked", "memstore/sql.py",
           '    con.execute("SET lock_configuration = true")\n', "",
           ("tests/test_sql_sandbox.py",), "SQL can SET the sandbox's settings back"),
    Mutant("EXPLAIN ANALYZE of a write allowed", "memstore/sql.py",
           "            kind = inner[0].type if len(inner) == 1 else kind\n",
           "            kind = duckdb.StatementType.SELECT\n",
           ("tests/test_sql_sandbox.py",), "EXPLAIN ANALYZE CREATE OR REPLACE VIEW samples runs"),
    # -- readers (stale.py) ----------------------------------------------------------------
    Mutant("readers do not re-read after a forget", "memstore/stale.py",
           "                if lost is None or isinstance(exc, (CorruptMemoryError, StaleVersionError)):\n",
           "                if True:\n",
           ("tests/test_concurrency.py",), "readers fail with raw Lance errors during a forget"),
]


def scratch_copy() -> Path:
    """The tracked and untracked-but-not-ignored files of the repository, in a temporary folder."""
    dest = Path(tempfile.mkdtemp(prefix="memstore-mutant-"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # the package ships migrations/ as memstore.migrations (pyproject's package-dir)
    (dest / "memstore" / "migrations").symlink_to(dest / "migrations")
    return dest


def run_mutant(mutant: Mutant, python: str) -> dict:
    scratch = scratch_copy()
    try:
        target = scratch / mutant.file
        source = target.read_text()
        count = source.count(mutant.old)
        if count != 1:
            return {"name": mutant.name, "result": f"patch does not apply ({count} matches)", "seconds": 0}
        target.write_text(source.replace(mutant.old, mutant.new))
        env = {**os.environ, "PYTHONPATH": str(scratch)}
        where = subprocess.run([python, "-c", "import memstore; print(memstore.__file__)"], cwd=scratch,
                               env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(scratch)):
            return {"name": mutant.name, "result": f"scratch copy not imported ({where})", "seconds": 0}
        start = time.perf_counter()
        done = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=scratch, env=env, capture_output=True, text=True)
        seconds = round(time.perf_counter() - start, 1)
        last = (done.stdout.strip().splitlines() or [""])[-1]
        return {"name": mutant.name, "file": mutant.file, "tests": list(mutant.tests), "why": mutant.why,
                "result": "caught" if done.returncode != 0 else "SURVIVED", "pytest": last, "seconds": seconds}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = set(names) - {m.name for m in chosen}
    if unknown:
        raise SystemExit(f"unknown mutant(s) {sorted(unknown)}; known: {[m.name for m in MUTANTS]}")
    rows = []
    for mutant in chosen:
        row = run_mutant(mutant, sys.executable)
        rows.append(row)
        print(f"{row['result']:>9}  {row['seconds']:>6}s  {mutant.name}  ({row.get('pytest', '')})", flush=True)
    out = ROOT / "benchmarks" / "results" / "mutants.json"
    out.parent.mkdir(exist_ok=True)
    if not names:
        out.write_text(json.dumps(rows, indent=1) + "\n")
    caught = sum(r["result"] == "caught" for r in rows)
    print(f"\n{caught} of {len(rows)} deliberate bugs caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

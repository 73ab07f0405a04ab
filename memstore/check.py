"""``mem.check()``: verify a memory end to end, like SQLite's ``PRAGMA integrity_check``.

Checksums. Lance data files are written once and never changed, so every
commit records the SHA-256 of each file its Lance writes made (data, deletion
and index files of the tables the version consists of) in the ``checksums``
table, in the same transaction (see ``Transaction.commit``). ``check()``
hashes every file the head's tables use again and compares. Lance itself keeps
no checksum of data pages: without this, flipped bytes in a data file are
read back as different vectors, silently.

Structure. The head's Lance versions exist; the audit holds versions
0..head once each, in order; ids are unique in ``sample_data``; every id
in ``sample_state`` is a row of ``sample_data``; every interval is well formed
(``valid_from < valid_to``), intervals of one id or taxonomy node do not
overlap, at most one is open, and the rows open at the head are as many as
the head says; no id reaches ``next_id``.

A memory that fails is marked (``damaged.json``) and refuses writes until a
later ``check()`` passes (after the named files were restored from a backup).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import CorruptMemoryError
from .schema import AUDIT_TABLE, CHECKSUMS_SCHEMA, CHECKSUMS_TABLE, DATA_TABLE, STATE_TABLE, TAXONOMY_TABLE

DAMAGE_FILE = "damaged.json"
#: bytes hashed at a time
HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class CheckReport:
    """What ``check()`` verified. ``unrecorded`` files predate checksums (made by an older memstore)."""

    version: int
    files_verified: int
    bytes_verified: int
    unrecorded: int
    rows: int
    problems: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def table_dir(name: str) -> str:
    from .versioning import TABLES_DIR

    return f"{TABLES_DIR}/{name}.lance"


def referenced_files(store, name: str, dataset) -> list[str]:
    """Paths (relative to the memory) of the data, deletion and index files ``dataset`` uses."""
    root = table_dir(name)
    out = []
    for fragment in dataset.get_fragments():
        out += [f"{root}/data/{f.path}" for f in fragment.data_files()]
        deletion = fragment.deletion_file()
        if deletion:
            out.append(f"{root}/{deletion}")
    for index in indices_of(dataset):
        folder = store.path / root / "_indices" / index["uuid"]
        if folder.is_dir():
            out += [f"{root}/_indices/{index['uuid']}/{p.name}" for p in sorted(folder.iterdir()) if p.is_file()]
    return out


def indices_of(dataset) -> list[dict]:
    """``dataset``'s indexes, each with its uuid and the fragments it covers."""
    import warnings

    with warnings.catch_warnings():  # list_indices is deprecated, but alone gives uuids and fragments
        warnings.simplefilter("ignore")
        return dataset.list_indices()


def new_file_checksums(store, head, version: int) -> pa.Table | None:
    """(path, sha256, bytes, version) of the files a transaction's Lance writes made, or None.

    Compares each changed table's latest Lance version with the one ``head``
    names. The checksums table itself and the log tables are not covered:
    a table cannot hold the hash of its own file.
    """
    from .versioning import LOG_TABLES

    named = head.lance_versions if head else {}
    new = []
    for name in sorted(store.table_names() - LOG_TABLES - {CHECKSUMS_TABLE}):
        latest = store.dataset(name)
        if named.get(name) == latest.version:
            continue
        before = set(referenced_files(store, name, store.dataset(name, named[name]))) if name in named else set()
        new += [rel for rel in referenced_files(store, name, latest) if rel not in before]
    if not new:
        return None
    return pa.Table.from_pylist([{"path": rel, "sha256": digest, "bytes": (store.path / rel).stat().st_size,
                                  "version": version}
                                 for rel, digest in zip(new, sha256_files(store.path / rel for rel in new))],
                                schema=CHECKSUMS_SCHEMA)


def sha256_files(paths) -> list[str]:
    """SHA-256 of each file, several at once: hashlib releases the GIL (a forget rewrites gigabytes)."""
    paths = list(paths)
    if len(paths) < 2:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(sha256_file, paths))


def check(store, head) -> CheckReport:
    """Verify the memory at ``head``; raise CorruptMemoryError naming what is wrong, or return a report."""
    problems: list[str] = []
    files, size, unrecorded = _check_files(store, head, problems)
    rows = _check_structure(store, head, problems)
    marker = store.path / DAMAGE_FILE
    if problems:
        from .versioning import write_atomically

        write_atomically(marker, json.dumps({"version": head.version, "problems": problems}, indent=1) + "\n")
        raise CorruptMemoryError(
            f"the memory at {str(store.path)!r} failed its check ({len(problems)} problem(s)): "
            + "; ".join(problems[:5]) + ". Writes are refused until a check passes: restore the named "
            "file(s) from a backup and run check() again, or copy out what still reads with "
            "memstore.open(path, read_only=True)")
    marker.unlink(missing_ok=True)
    return CheckReport(head.version, files, size, unrecorded, rows)


def refuse_writes_if_damaged(store) -> None:
    """Writers call this: a memory that failed its check takes no write."""
    marker = store.path / DAMAGE_FILE
    if marker.exists():
        try:
            problems = json.loads(marker.read_text())["problems"]
        except (OSError, ValueError, KeyError):
            problems = ["(the damage record itself cannot be read)"]
        raise CorruptMemoryError(
            f"the memory at {str(store.path)!r} failed its last check and takes no writes: "
            + "; ".join(problems[:5]) + ". Restore the named file(s) and run mem.check() "
            "(memstore check PATH) again")


def _check_files(store, head, problems: list[str]) -> tuple[int, int, int]:
    recorded = {}
    if CHECKSUMS_TABLE in head.lance_versions:
        table = store.dataset(CHECKSUMS_TABLE, head.lance_versions[CHECKSUMS_TABLE]).to_table(
            columns=["path", "sha256", "bytes"])
        recorded = {p: (h, b) for p, h, b in zip(table["path"].to_pylist(), table["sha256"].to_pylist(),
                                                 table["bytes"].to_pylist())}
    files = size = unrecorded = 0
    to_hash = []  # (rel, path, sha256 recorded): hashed together at the end, several at once
    for name, version in sorted(head.lance_versions.items()):
        if name == CHECKSUMS_TABLE:
            continue
        try:
            dataset = store.dataset(name, version)
            paths = referenced_files(store, name, dataset)
        except Exception as exc:  # noqa: BLE001 -- whatever Lance says, it is the finding
            problems.append(f"{table_dir(name)}: version {version} cannot be read ({_short(exc)})")
            continue
        for rel in paths:
            path = store.path / rel
            if not path.is_file():
                problems.append(f"{rel}: missing (table {name} uses it)")
                continue
            files += 1
            size += path.stat().st_size
            if rel not in recorded:
                unrecorded += 1
                continue
            want, want_bytes = recorded[rel]
            if path.stat().st_size != want_bytes:
                problems.append(f"{rel}: {path.stat().st_size} bytes, {want_bytes} when written")
            else:
                to_hash.append((rel, path, want))
    for (rel, _, want), digest in zip(to_hash, sha256_files(path for _, path, _ in to_hash)):
        if digest != want:
            problems.append(f"{rel}: its SHA-256 differs from the one recorded when it was written "
                            "(the file was changed or damaged)")
    return files, size, unrecorded


def _check_structure(store, head, problems: list[str]) -> int:
    audit = store.dataset(AUDIT_TABLE).to_table(columns=["version"], filter=f"version <= {head.version}")
    versions = np.sort(audit["version"].to_numpy())
    if not np.array_equal(versions, np.arange(head.version + 1)):
        problems.append(f"{table_dir(AUDIT_TABLE)}: the versions are not 0..{head.version} once each")
    if DATA_TABLE not in head.lance_versions:
        return 0
    try:
        data = store.dataset(DATA_TABLE, head.lance_versions[DATA_TABLE]).to_table(columns=["id"])
        state = store.dataset(STATE_TABLE, head.lance_versions[STATE_TABLE]).to_table(
            columns=["id", "valid_from", "valid_to"])
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the sample tables cannot be read ({_short(exc)})")
        return 0
    ids = data["id"].to_numpy()
    uniq = np.unique(ids)
    if len(uniq) != len(ids):
        problems.append(f"{table_dir(DATA_TABLE)}: {len(ids) - len(uniq)} id(s) appear more than once")
    if len(ids) and ids.max() >= head.next_id:
        problems.append(f"{table_dir(DATA_TABLE)}: id {int(ids.max())} is not below next_id {head.next_id}")
    orphans = np.setdiff1d(state["id"].to_numpy(), uniq)
    if len(orphans):
        problems.append(f"{table_dir(STATE_TABLE)}: {len(orphans)} id(s) with no row in {DATA_TABLE}, "
                        f"e.g. {orphans[:3].tolist()}")
    open_rows = _check_intervals(state, "id", STATE_TABLE, problems)
    if open_rows != head.rows_total:
        problems.append(f"{table_dir(STATE_TABLE)}: {open_rows} rows are open at the head, "
                        f"version {head.version} says {head.rows_total}")
    if TAXONOMY_TABLE in head.lance_versions:
        taxonomy = store.dataset(TAXONOMY_TABLE, head.lance_versions[TAXONOMY_TABLE]).to_table(
            columns=["node", "valid_from", "valid_to"])
        _check_intervals(taxonomy, "node", TAXONOMY_TABLE, problems)
    return open_rows


def _check_intervals(table: pa.Table, key: str, name: str, problems: list[str]) -> int:
    """Intervals well formed and, per key, disjoint; returns the number of open ones."""
    end = pc.fill_null(table["valid_to"], np.iinfo(np.int64).max)
    bad = pc.sum(pc.less_equal(end, table["valid_from"]).cast(pa.int64())).as_py() or 0
    if bad:
        problems.append(f"{table_dir(name)}: {bad} interval(s) end before they begin")
    t = pa.table({"key": table[key], "start": table["valid_from"], "end": end}).sort_by(
        [("key", "ascending"), ("start", "ascending")])
    same = pc.equal(t["key"][1:], t["key"][:-1]) if t.num_rows > 1 else pa.array([], pa.bool_())
    if t.num_rows > 1:
        overlap = pc.and_(same, pc.less(t["start"][1:], t["end"][:-1]))
        n = pc.sum(overlap.cast(pa.int64())).as_py() or 0
        if n:
            problems.append(f"{table_dir(name)}: {n} interval(s) overlap another of the same {key}")
    return int(pc.sum(pc.is_null(table["valid_to"]).cast(pa.int64())).as_py() or 0)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


__all__ = ["CheckReport", "check"]

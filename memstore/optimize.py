"""Keeping a memory fast over its life: merge small fragments, drop Lance versions nobody needs.

Every write leaves files behind. An add appends a fragment to ``sample_data``
and to ``sample_state``; a reweight appends state rows and deletion files;
every commit appends a fragment to ``audit`` and ``checksums``; and each of
these is a new Lance version. Lance merges nothing by itself: after 2,000 adds
of 10 rows a memory held 18,029 files and took 2 s to open, 111x a fresh one.

memstore's versions do not need old Lance versions: version ``v`` is read from
the *newest* committed tables, filtered by validity intervals (versioning.py).
So the only Lance versions worth keeping are the ones the head names and each
table's latest, and small fragments can be merged at any time without
changing what any memory version, tag, ``at()`` or ``restore`` reads.

Two ways it happens:

* :func:`maintain`, inside every write's transaction (``Transaction.commit``):
  a data table with more than ``AUTO_FRAGMENTS`` small fragments (under
  ``FRAGMENT_ROWS`` rows) has them merged, reading at most ``AUTO_SOURCE_ROWS``
  rows so a write's extra cost is bounded, and checksum rows of files no
  version uses any more are dropped; the state table's id index is kept
  covering it (:func:`keep_id_index`). After the commit, a crowded ``audit`` or
  ``tags`` table is merged the same way (:func:`merge_log_tables`), and a table
  with more than ``AUTO_VERSIONS`` Lance versions is cleaned up. No extra
  memory version, no manual step.
* :func:`optimize` (``mem.optimize()``, ``memstore optimize PATH``): the same
  for every table, with no bound, as a memory version of its own (operation
  ``optimize``, no rows changed), then a cleanup of every Lance version the new
  head does not name.

Both run under the writer lock and inside a transaction, so a writer killed
mid-way leaves the memory at its last committed version (the recovery of
versioning.py rolls the data tables back; a merged ``audit`` or ``tags`` table
holds the same rows as before, so it needs no rollback).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .schema import AUDIT_TABLE, CHECKSUMS_TABLE, STATE_TABLE

#: rows of a data fragment: what an add writes at most, what a merge grows small ones to, and so
#: what a forget rewrites for each fragment that held a forgotten row
FRAGMENT_ROWS = 1 << 17
#: fragments a table may hold before a write merges its small ones
AUTO_FRAGMENTS = 32
#: rows a write's merge may read (bounded extra cost per write)
AUTO_SOURCE_ROWS = 1 << 17
#: Lance versions a table may hold before a write removes those the head does not name
AUTO_VERSIONS = 32
#: share of a fragment's rows deleted (state rows a reweight replaced) past which a write rewrites it
DELETED_SHARE = 0.1
#: tables whose rows writes look up by id, through a BTREE index on ``id``: the state table, which
#: every reweight, relabel and prune updates. Not ``sample_data``: only a forget looks its rows up
#: (a scan of its id column, 0.05 s at 4M rows), and a forget compacts it, which remaps a BTREE
#: whole (+0.4 s at 4M rows): a forget would cost what the memory holds again.
ID_INDEXED_TABLES = (STATE_TABLE,)
#: rows a table reaches before it gets its id index, and rows outside the index (appended
#: since it was built) before a write folds them in; below this a scan of the ids is as fast
ID_INDEX_ROWS = 1 << 14
ID_INDEX_NAME = "id_idx"


@dataclass(frozen=True)
class OptimizeReport:
    """What ``optimize`` did: per table, fragments and Lance versions before and after; bytes on disk."""

    version: int
    tables: dict = field(default_factory=dict)
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def fragment_count(store, name: str) -> int:
    return len(store.dataset(name).get_fragments())


def small_fragment_count(store, name: str) -> int:
    """Fragments a write's merge would take: under half of FRAGMENT_ROWS rows, or with many deleted."""
    return sum(_mergeable(f, FRAGMENT_ROWS) for f in store.dataset(name).get_fragments())


def lance_version_count(store, name: str) -> int:
    """Manifests on disk: a directory listing, not a read of each manifest."""
    folder = store.path / "tables" / f"{name}.lance" / "_versions"
    return sum(1 for p in folder.iterdir() if p.suffix == ".manifest") if folder.is_dir() else 0


def merge_fragments(store, name: str, *, target_rows: int | None = None, source_rows: int | None = None) -> None:
    """Merge ``name``'s small fragments (and drop rows deleted from them) into fragments of ``target_rows``.

    Lance commits of its own on the table's latest version (inside a
    transaction, they are the transaction's; :func:`compact_fragments` may
    need a few to keep the bound); vector indexes are remapped in the same
    steps. Lance rebases a later append through an older handle onto the
    merged version.

    ``source_rows`` bounds the rows read (a write's merge). The bound is kept
    by choosing the fragments here: Lance's own ``max_source_rows`` gives up on
    a whole run when its first group is larger, and the first group is the
    large, oldest fragment once it has deletions, so nothing was merged and a
    state table grew to 557 fragments in 3,000 writes. Here the fragments
    merged are the small ones (under half of ``target_rows``) and those with
    more than ``DELETED_SHARE`` of their rows deleted, oldest first, while they
    fit in the bound; every other fragment is left as it is.
    """
    target = target_rows or FRAGMENT_ROWS
    dataset = store.dataset(name)
    # A write's merge leaves the fragments under the id index alone: merging them would leave
    # Lance's fragment-reuse index to map the index's rows, and reads paid for every such merge
    # since the index was built (a filtered read of the state table took 37 ms after 13,500
    # writes, 7 ms without it). keep_id_index merges them when it rebuilds the index.
    indexed = _id_indexed_fragments(dataset) if source_rows is not None and name in ID_INDEXED_TABLES else set()
    chosen, budget = [], source_rows
    for fragment in dataset.get_fragments():
        rows = fragment.metadata.physical_rows
        if not _mergeable(fragment, target) or fragment.fragment_id in indexed:
            continue
        if budget is not None:
            if rows > budget:
                continue
            budget -= rows
        chosen.append(fragment.fragment_id)
    # the id index is a BTREE, which a remap rewrites whole: keep_id_index rebuilds it instead,
    # after this merge (optimize, a forget); vector indexes are remapped now
    compact_fragments(store, name, chosen, target_rows=target, defer_index_remap=name in ID_INDEXED_TABLES)


def compact_fragments(store, name: str, fragment_ids, *, target_rows: int, **options) -> None:
    """Rewrite the fragments ``fragment_ids`` of ``name`` into fragments of at most ``target_rows`` rows.

    Lance bins adjacent candidates and writes each bin as one fragment however
    large: three adjacent full fragments that each lost a row to a forget came
    back as two of 1.5x the bound, so a memory's fragments, and the cost of
    every later forget, would grow with each forget. Here the candidates go to
    Lance in groups it cannot overfill: runs of adjacent candidates whose live
    rows fit in ``target_rows``, and in one call only groups with a fragment
    that is not a candidate between them. Lance appends what it writes at the
    end, so groups that were apart can meet: they go in a later call (a run of
    n adjacent full fragments takes about log2(n) calls, each a Lance commit).
    ``options`` go to Lance's ``compact_files``.
    """
    wanted = set(fragment_ids)
    groups, run, run_rows = [], [], 0
    for fragment in store.dataset(name).get_fragments():
        rows = _live_rows(fragment)
        if fragment.fragment_id not in wanted or (run and run_rows + rows > target_rows):
            if run:
                groups.append(run)
            run, run_rows = [], 0
        if fragment.fragment_id in wanted:
            run.append(fragment.fragment_id)
            run_rows += rows
    if run:
        groups.append(run)
    while groups:
        dataset = store.dataset(name)
        fragments = dataset.get_fragments()
        position = {f.fragment_id: i for i, f in enumerate(fragments)}
        now, end = [], -2
        for group in sorted(groups, key=lambda g: position[g[0]]):
            if position[group[0]] > end + 1:  # not next to the group before it
                now.append(group)
                end = position[group[-1]]
        included = {f for group in now for f in group}
        dataset.optimize.compact_files(target_rows_per_fragment=target_rows, **options,
                                       excluded_fragment_ids=[f.fragment_id for f in fragments
                                                              if f.fragment_id not in included])
        groups = [g for g in groups if g not in now]


def _deleted_rows(fragment) -> int:
    deletion = fragment.metadata.deletion_file
    return deletion.num_deleted_rows if deletion is not None else 0


def _live_rows(fragment) -> int:
    return fragment.metadata.physical_rows - _deleted_rows(fragment)


def _id_index(indices: list[dict]) -> dict | None:
    """The id index among ``indices`` (check.indices_of), or None."""
    return next((i for i in indices if i["name"] == ID_INDEX_NAME), None)


def _id_indexed_fragments(dataset) -> set[int]:
    from .check import indices_of

    index = _id_index(indices_of(dataset))
    return set(index["fragment_ids"] or ()) if index is not None else set()


def _mergeable(fragment, target_rows: int) -> bool:
    """Small (under half of ``target_rows``), or with more than ``DELETED_SHARE`` of its rows deleted."""
    rows = fragment.metadata.physical_rows
    deleted = _deleted_rows(fragment) / rows if rows else 0.0
    return rows < target_rows // 2 or deleted > DELETED_SHARE


def keep_id_index(store, name: str, *, rebuild: bool = True) -> None:
    """Give ``name`` a BTREE index on ``id`` once it is large, and keep it covering the table.

    A reweight closes the open state rows of its ids: without the index that
    is a scan of every id the table ever held, so a write would slow down as
    the memory's history grows (a state table of 1.1M rows: 100 ms for an
    update of 10 ids, 28 ms with the index). Rows appended since the index was
    built are scanned, so it is rebuilt only once ``ID_INDEX_ROWS`` of them,
    and an eighth of the indexed rows, pile up: its cost per appended row
    stays constant. It is rebuilt at once when a merge (optimize, a forget)
    rewrote indexed fragments and left their remap to Lance's fragment-reuse
    index, which every later read would otherwise apply; ``rebuild=False``
    (a forget's own commit, whose cost must be what it touches) leaves that
    to the next write.
    """
    from .check import indices_of

    dataset = store.dataset(name)
    indices = indices_of(dataset)
    index = _id_index(indices)
    fragments = dataset.get_fragments()
    if index is None:
        if sum(f.metadata.physical_rows for f in fragments) >= ID_INDEX_ROWS:
            dataset.create_scalar_index("id", "BTREE", name=ID_INDEX_NAME)
        return
    covered = set(index["fragment_ids"] or ())
    inside = sum(f.metadata.physical_rows for f in fragments if f.fragment_id in covered)
    outside = sum(f.metadata.physical_rows for f in fragments if f.fragment_id not in covered)
    reuse = any(i["type"] == "FragmentReuse" for i in indices)
    if (reuse and rebuild) or outside >= max(ID_INDEX_ROWS, inside // 8):
        rebuild_id_index(store, name)


def rebuild_id_index(store, name: str) -> None:
    """Merge ``name``'s small fragments, build its id index anew over all of them, drop the reuse index.

    A rebuild reads the id column once (40 ms at 237k state rows), ten times
    faster than Lance's ``optimize_indices`` on the same table (which also
    leaves the fragment-reuse index in place). The new index addresses every
    row where it now is, so the fragment-reuse index, which only serves the
    old one, can go: the id index is the table's only index.
    """
    from .check import indices_of

    merge_fragments(store, name)
    store.dataset(name).create_scalar_index("id", "BTREE", name=ID_INDEX_NAME, replace=True)
    dataset = store.dataset(name)
    for index in indices_of(dataset):
        if index["type"] == "FragmentReuse":
            dataset.drop_index(index["name"])


def drop_dead_checksums(tx) -> None:
    """Delete checksum rows of files that no table's latest version uses (removed by a cleanup).

    Inside the transaction: the committed head keeps its rows until this
    commits, and a rollback brings them back.
    """
    from .check import referenced_files
    from .versioning import LOG_TABLES

    store = tx.store
    if CHECKSUMS_TABLE not in store.table_names():
        return
    used = set()
    for name in store.table_names() - LOG_TABLES - {CHECKSUMS_TABLE}:
        used.update(referenced_files(store, name, store.dataset(name)))
    paths = store.dataset(CHECKSUMS_TABLE).to_table(columns=["path"])["path"].to_numpy(zero_copy_only=False)
    dead = np.unique(paths[~np.isin(paths, np.array(sorted(used), dtype=object))]) if len(paths) else []
    for lo in range(0, len(dead), 500):
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in dead[lo:lo + 500])
        tx.table(CHECKSUMS_TABLE).delete(f"path IN ({listed})")


def maintain(tx) -> None:
    """Before a commit: merge the small fragments of every data table that has too many (bounded work).

    Then keep the id indexes of the sample tables up (:func:`keep_id_index`).

    The log tables (audit, tags) are merged after the commit (:func:`merge_log_tables`): recovery
    does not roll them back, and a writer killed before its commit must leave nothing behind.
    """
    from .versioning import LOG_TABLES

    store = tx.store
    crowded = [n for n in sorted(store.table_names() - LOG_TABLES)
               if small_fragment_count(store, n) > AUTO_FRAGMENTS]
    for name in _checksums_last(crowded):
        if name == CHECKSUMS_TABLE:  # after the other merges: the files they replaced are dead too
            drop_dead_checksums(tx)
        merge_fragments(store, name, source_rows=AUTO_SOURCE_ROWS)
    for name in sorted(set(ID_INDEXED_TABLES) & store.table_names()):
        keep_id_index(store, name, rebuild=tx.rebuild_id_index)


def _checksums_last(names) -> list[str]:
    return sorted(names, key=lambda n: (n == CHECKSUMS_TABLE, n))


def merge_log_tables(store, head, *, force: bool = False):
    """After a commit, under the lock: merge the audit and tags tables when crowded (always if ``force``).

    Their rows do not change, only their files; ``head.json`` is written again with the audit's
    new Lance version, so the next open still finds the head without reading the log. Returns the
    head with that version.
    """
    from dataclasses import replace

    from .versioning import LOG_TABLES

    merged = False
    for name in sorted(LOG_TABLES & store.table_names()):
        if force or small_fragment_count(store, name) > AUTO_FRAGMENTS:
            merge_fragments(store, name, source_rows=None if force else AUTO_SOURCE_ROWS)
            merged = True
    if not merged:
        return head
    head = replace(head, audit_lance_version=store.dataset(AUDIT_TABLE).version)
    store.write_head_record(head)
    return head


def cleanup_if_needed(store, head) -> None:
    """After a commit, under the lock: remove Lance versions the head does not need, once they pile up."""
    if any(lance_version_count(store, n) > AUTO_VERSIONS for n in store.table_names()):
        store.cleanup(head)


def disk_usage(path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def optimize(store, message: str | None = None, *, target_rows: int | None = None) -> OptimizeReport:
    """Merge every table's small fragments and remove every Lance version the head does not name.

    One memory version (operation ``optimize``, no rows changed); every
    earlier version reads exactly as before.
    """
    from .versioning import LOG_TABLES

    start = time.perf_counter()
    files_before, bytes_before = disk_usage(store.path)
    with store.transaction() as tx:
        names = sorted(store.table_names())
        before = {n: (fragment_count(store, n), lance_version_count(store, n)) for n in names}
        for name in _checksums_last(set(names) - LOG_TABLES):
            if name == CHECKSUMS_TABLE:
                drop_dead_checksums(tx)
            merge_fragments(store, name, target_rows=target_rows)
        for name in sorted(set(ID_INDEXED_TABLES) & set(names)):
            keep_id_index(store, name)
        head = tx.commit("optimize", message, rows_affected=0)
        head = merge_log_tables(store, head, force=True)
        store.cleanup(head)
        tables = {n: {"fragments_before": before[n][0], "fragments_after": fragment_count(store, n),
                      "lance_versions_before": before[n][1], "lance_versions_after": lance_version_count(store, n)}
                  for n in names}
    files_after, bytes_after = disk_usage(store.path)
    return OptimizeReport(version=head.version, tables=tables, files_before=files_before, files_after=files_after,
                          bytes_before=bytes_before, bytes_after=bytes_after,
                          seconds=round(time.perf_counter() - start, 3))


__all__ = ["AUTO_FRAGMENTS", "AUTO_SOURCE_ROWS", "AUTO_VERSIONS", "FRAGMENT_ROWS", "OptimizeReport", "optimize"]

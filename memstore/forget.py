"""Forgetting for real: erase rows from every version, index and file, then prove it.

A delete in Lance is soft. The row stays in its data file behind a deletion
file, old Lance versions still list it, index files still hold its codes, and
``restore`` brings it back. ``prune`` is that kind of delete, on purpose: it
keeps time travel. ``forget`` is the other kind. For the ids given it

1. deletes the rows from ``sample_data`` and *every* interval row of theirs
   (all versions) from ``sample_state``, so no memory version, tag or restore
   can name them again; every other row keeps its history, so earlier
   versions stay readable, without the forgotten rows;
2. compacts both tables with ``materialize_deletions_threshold=0``, which
   rewrites each fragment that held a forgotten row without it, and no other
   fragment (adds write fragments of at most ``FRAGMENT_ROWS`` rows, so that
   is bounded work); Lance remaps the ANN index in the same step, dropping
   the rows' entries;
3. commits the memory version (the audit row records how many rows, when,
   why, and the SHA-256 of each forgotten vector, never the vector);
4. removes every older Lance version of every table, and with them the old
   data, deletion and index files (memstore's own versions do not need them:
   see versioning.py);
5. checks that every data file that held a forgotten row is gone
   (:func:`holders_gone`), then scans every other file under the memory's
   directory for the raw bytes of each forgotten vector
   (:func:`find_vector_bytes`), and of its thumbnail if it has one
   (``memstore.thumbnails``), except the data files of fragments that held
   none of the rows: Lance never changes a file, so they still hold none. It
   raises :class:`~memstore.errors.ForgetError` if any byte is still there.
   The proof costs what the forget touched, not what the memory holds; the
   tests check the same guarantee independently, by scanning every file. A
   forget finished after a crash (below) scans every file.

Steps 4 and 5 come after the commit, so a forget killed between them would
leave the rows' bytes on disk while the audit says they are gone. Before its
commit, forget therefore writes ``forget.pending/`` (the ids, and the vectors
as stored: the bytes the scan must look for, which the old Lance versions hold
at that moment anyway). Whoever takes the write lock next (an open, any
write) finishes the job: cleanup, scan, then the pending record is removed,
last. A pending record of a version that never committed is simply dropped.
The scan skips only that record.

A forgotten vector that equals a row the memory keeps (a duplicate) cannot be
told apart from that row's bytes: it is counted as ``still_held`` in the
report, not as a failure.

What forgetting does not undo: models already fitted hold their own copy of
the vectors in RAM (refit them), and memory handles opened before the forget
read Lance versions that no longer exist (open the memory again). The IVF
centroids and PQ codebooks of an index were trained with the forgotten rows
among many others; ``forget(..., rebuild_index=True)`` trains them again
without.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import ForgetError, UnknownIdsError
from .schema import DATA_TABLE, STATE_TABLE

#: ids per Lance ``IN (...)`` filter
ID_CHUNK = 8192
#: bytes of a file read at a time by the scan
SCAN_CHUNK_BYTES = 64 << 20
#: up to this many vectors, the scan looks for each by itself (bytes.find); more share one filter pass
FEW_VECTORS = 8
#: bits of the scan's prefilter, a bitmap over the hashed first word of each
#: anchor: 2**20 bytes stay in a core's cache, where random lookups are cheap
FILTER_BITS = 20


@dataclass(frozen=True)
class ForgetReport:
    """What ``Memory.forget`` erased and how it checked.

    ``seconds`` times each phase (select, erase, compact, commit, cleanup,
    rebuild_index, verify). ``files_scanned`` and ``bytes_scanned`` are those of
    the final check, which found no forgotten vector's or thumbnail's bytes in
    any file.
    ``unverifiable`` vectors have fewer than two consecutive non-zero
    components, so their bytes look like padding and cannot be searched for;
    ``still_held`` ones equal a vector the memory keeps. Both counts include
    thumbnails: one under 16 bytes cannot be searched for, one equal to a
    kept row's (the same image) is still held.
    """

    version: int
    rows: int
    rows_alive: int
    files_scanned: int
    bytes_scanned: int
    unverifiable: int
    still_held: int
    seconds: dict = field(default_factory=dict)
    #: files that held a forgotten row (data files of its fragment), each checked to be gone
    files_replaced: int = 0
    #: bytes of data files that held none of the rows and were not read again
    bytes_untouched: int = 0
    #: forgotten rows whose thumbnail the check also looked for (``memstore.thumbnails``)
    thumbnails: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def vector_hashes(vectors: np.ndarray) -> list[str]:
    """Hex SHA-256 of each row's float32 bytes: what the audit keeps of a forgotten row."""
    v = np.ascontiguousarray(vectors, np.float32)
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in v]


def id_filter(ids: np.ndarray) -> list[str]:
    """Lance filters selecting ``ids``, a chunk of ids each."""
    ids = np.asarray(ids, np.int64)
    return [f"id IN ({','.join(map(str, ids[i:i + ID_CHUNK]))})" for i in range(0, len(ids), ID_CHUNK)]


def rows_to_forget(data, ids: np.ndarray) -> pa.Table:
    """(id, vector[, thumbnail], _rowaddr) of ``ids`` in the data table; every id must be there."""
    from .thumbnails import THUMBNAIL_COLUMN, has_thumbnails

    columns = ["id", "vector"] + ([THUMBNAIL_COLUMN] if has_thumbnails(data.schema) else [])
    parts = [data.to_table(columns=columns, filter=f, with_row_address=True) for f in id_filter(ids)]
    found = pa.concat_tables(parts) if parts else None
    have = found["id"].to_numpy() if found is not None else np.zeros(0, np.int64)
    missing = np.setdiff1d(ids, have)
    if len(missing):
        raise UnknownIdsError(
            f"{len(missing)} id(s) are not rows of this memory (never added, or already forgotten), "
            f"e.g. {missing[:5].tolist()}; nothing was forgotten. Select ids FROM samples, or pass "
            "the ids of rows pruned earlier")
    return found


def state_rows(state, ids: np.ndarray) -> tuple[int, set[int]]:
    """How many of ``ids`` are alive at the head (an open interval), and the fragments of all their rows.

    Reads only their rows (through the id index), not the state of the whole memory.
    """
    parts = [state.to_table(columns=["valid_to"], filter=f, with_row_address=True) for f in id_filter(ids)]
    rows = pa.concat_tables(parts) if parts else None
    if rows is None or not rows.num_rows:
        return 0, set()
    return rows["valid_to"].null_count, fragments_of(rows["_rowaddr"].to_numpy())


def erase(tx, ids: np.ndarray) -> None:
    """Delete the rows and all their interval rows; nothing is committed yet."""
    for f in id_filter(ids):
        tx.table(DATA_TABLE).delete(f)
        tx.table(STATE_TABLE).delete(f)


def fragments_of(row_addresses: np.ndarray) -> set[int]:
    """Lance fragment ids of rows, from their row addresses (fragment id in the high 32 bits)."""
    return set((np.asarray(row_addresses, np.uint64) >> np.uint64(32)).astype(np.int64).tolist())


def compact(store, name: str, fragments: set[int], *, defer_index_remap: bool = False) -> None:
    """Rewrite the ``fragments`` that held forgotten rows, without their deleted rows (and remap indexes).

    Every other fragment is excluded, those with deletions of their own too
    (state rows a reweight replaced: after a reweight of 10% of a memory that
    is every state fragment): Lance would otherwise rewrite them or merge
    small neighbours, and a forget would cost what the memory holds, not what
    it touches. The rewritten fragments keep the size bound
    (optimize.compact_fragments). ``defer_index_remap`` leaves the remap of
    the table's indexes to Lance's fragment-reuse index: for ``sample_state``,
    whose only index is the one on ``id`` (no vectors), since remapping a
    BTREE rewrites all of it (1.1 s at 10M rows); the next write rebuilds it
    (optimize.keep_id_index). Vector indexes of ``sample_data`` are remapped
    now: their files must not keep the forgotten vectors.
    """
    from .optimize import FRAGMENT_ROWS, compact_fragments

    compact_fragments(store, name, fragments, target_rows=FRAGMENT_ROWS, materialize_deletions=True,
                      materialize_deletions_threshold=0.0, compaction_mode="reencode",
                      defer_index_remap=defer_index_remap)


@dataclass(frozen=True)
class Holders:
    """Which data files held the rows to forget, and which held none of them (not rescanned)."""

    held: frozenset  # paths relative to the memory: data files of the fragments holding a row
    untouched: frozenset  # data files of every other fragment of sample_data

    @classmethod
    def of(cls, dataset, fragments: set[int]) -> "Holders":
        """From the ids of the fragments that hold the rows (:func:`fragments_of` their row addresses)."""
        from .check import table_dir

        root = table_dir(DATA_TABLE)
        held, untouched = set(), set()
        for fragment in dataset.get_fragments():
            files = {f"{root}/data/{d.path}" for d in fragment.data_files()}
            (held if fragment.fragment_id in fragments else untouched).update(files)
        return cls(frozenset(held), frozenset(untouched - held))


# -- the pending record: what finishes a forget killed after its commit -------------
PENDING_DIR = "forget.pending"


@dataclass(frozen=True)
class PendingForget:
    version: int  # the memory version the forget commits
    ids: np.ndarray  # (m,) int64
    stored: np.ndarray  # (m, dim) the vectors as the data table stores them (float32 or float16)
    thumbnails: list  # the rows' thumbnails (bytes), those that have one


def thumbnails_of(found: pa.Table) -> list:
    """The thumbnails (bytes) of the rows :func:`rows_to_forget` found, rows without one left out."""
    from .thumbnails import THUMBNAIL_COLUMN, has_thumbnails

    if not has_thumbnails(found.schema):
        return []
    return [b for b in found[THUMBNAIL_COLUMN].to_pylist() if b is not None]


def write_pending(store, version: int, ids: np.ndarray, stored: np.ndarray, thumbnails: list = ()) -> None:
    """Record, durably and before the commit, what the forget must still erase and check."""
    from .versioning import fsync_dir, write_atomically

    final = store.path / PENDING_DIR
    tmp = store.path / (PENDING_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, array in (("ids.npy", np.asarray(ids, np.int64)), ("vectors.npy", stored)):
        with (tmp / name).open("wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    with (tmp / "thumbnails.arrow").open("wb") as f:
        with pa.ipc.new_file(f, pa.schema([("thumbnail", pa.binary())])) as writer:
            writer.write_table(pa.table({"thumbnail": pa.array(list(thumbnails), pa.binary())}))
        f.flush()
        os.fsync(f.fileno())
    write_atomically(tmp / "meta.json", json.dumps({"version": int(version)}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(store.path)


def read_pending(store) -> PendingForget | None:
    root = store.path / PENDING_DIR
    shutil.rmtree(store.path / (PENDING_DIR + ".tmp"), ignore_errors=True)  # never renamed: never used
    if not root.is_dir():
        return None
    try:
        meta = json.loads((root / "meta.json").read_text())
        thumbnails = root / "thumbnails.arrow"  # absent in a record written before thumbnails were kept
        thumbnails = pa.ipc.open_file(pa.memory_map(str(thumbnails))).read_all()["thumbnail"].to_pylist() \
            if thumbnails.exists() else []
        return PendingForget(int(meta["version"]), np.load(root / "ids.npy", allow_pickle=False),
                             np.load(root / "vectors.npy", allow_pickle=False), thumbnails)
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise store._damage(PENDING_DIR, f"the record of an unfinished forget cannot be read ({exc}); "
                            "it is needed to finish erasing its rows") from None


def has_pending_forget(store) -> bool:
    return (store.path / PENDING_DIR).is_dir() or (store.path / (PENDING_DIR + ".tmp")).exists()


def clear_pending(store) -> None:
    from .versioning import fsync_dir

    shutil.rmtree(store.path / PENDING_DIR, ignore_errors=True)
    fsync_dir(store.path)


def finish_pending_forget(store, head) -> tuple[tuple[int, int], int, int] | None:
    """Finish a forget that committed but was stopped before its cleanup and check (under the lock).

    Returns the check's figures (as :func:`verify`), or None if nothing was pending.
    """
    pending = read_pending(store)
    if pending is None:
        return None
    if pending.version > head.version or not _committed_forget(store, pending.version):
        clear_pending(store)  # the forget never committed: its rows are still the memory's
        return None
    store.cleanup(head)
    result = verify(store, pending.stored.astype(np.float32), store.dataset(DATA_TABLE), pending.stored,
                    thumbnails=pending.thumbnails)
    clear_pending(store)
    return result


def _committed_forget(store, version: int) -> bool:
    from .schema import AUDIT_TABLE

    row = store.dataset(AUDIT_TABLE).to_table(columns=["operation"], filter=f"version = {int(version)}")
    return row.num_rows == 1 and row["operation"][0].as_py() == "forget"


# -- the check -------------------------------------------------------------------------
@dataclass
class _Patterns:
    """What the scan looks for: byte strings (needles), each found by an 8-byte anchor inside it."""

    needles: list  # the searchable ones, in anchor order
    anchors: np.ndarray  # (m,) uint64, sorted: 8 bytes of the needle, read little-endian
    where: np.ndarray  # (m,) int64: the anchor's byte offset inside its needle
    rows: np.ndarray  # (m,) int64: the needle's index in the caller's list
    bitmap: np.ndarray  # (2**FILTER_BITS,) bool: buckets holding an anchor's first word

    @classmethod
    def of(cls, needles: list, where: list) -> tuple["_Patterns", int]:
        """``where[i]``: the anchor's offset in ``needles[i]``, None for a needle that has none."""
        rows = [i for i, w in enumerate(where) if w is not None]
        anchors = np.array([int.from_bytes(needles[i][where[i]:where[i] + 8], "little") for i in rows], np.uint64)
        order = np.argsort(anchors, kind="stable")
        rows = np.asarray(rows, np.int64)[order]
        bitmap = np.zeros(1 << FILTER_BITS, bool)
        bitmap[_bucket((anchors & np.uint64(0xFFFFFFFF)).astype(np.uint32))] = True
        return cls([needles[i] for i in rows], anchors[order],
                   np.asarray([where[i] for i in rows], np.int64), rows, bitmap), len(needles) - len(rows)


def vector_needles(vectors: np.ndarray) -> tuple[list, list]:
    """Each vector's bytes, anchored at its first two consecutive non-zero float32 words.

    A vector without two (a 1-d one, or one of mostly zeros) looks like
    padding: it cannot be told from other bytes and has no anchor.
    """
    v = np.ascontiguousarray(vectors, np.float32)
    words = v.view(np.uint32)  # (m, dim)
    both = (words[:, :-1] != 0) & (words[:, 1:] != 0)  # (m, dim - 1)
    first = both.argmax(1) if both.shape[1] else np.zeros(len(v), np.int64)
    searchable = both.any(1) if both.shape[1] else np.zeros(len(v), bool)
    return [row.tobytes() for row in v], [4 * int(w) if ok else None for w, ok in zip(first, searchable)]


def blob_needles(blobs: list) -> tuple[list, list]:
    """Each blob (a thumbnail's encoded bytes), anchored at 8 bytes from its middle.

    An encoded image's middle is compressed data, unlike its header, which
    every thumbnail shares. Blobs of under 16 bytes have no anchor.
    """
    where = []
    for blob in blobs:
        at = None
        for w in range(len(blob) // 2 - 4, len(blob) - 8) if len(blob) >= 16 else ():
            window = blob[w:w + 8]
            if window[:4] != bytes(4) and window[4:] != bytes(4) and len(set(window)) > 1:
                at = w
                break
        where.append(at)
    return list(blobs), where


def _bucket(words: np.ndarray) -> np.ndarray:
    """Multiplicative hash of uint32 words to FILTER_BITS bits."""
    return (words * np.uint32(0x9E3779B1)) >> np.uint32(32 - FILTER_BITS)


def find_vector_bytes(root, vectors, *, chunk_bytes: int = SCAN_CHUNK_BYTES, skip=(), skip_files=()):
    """Where the raw float32 bytes of any of ``vectors`` occur in the files under ``root``.

    Every byte offset is tried (four 4-byte alignments). A vector is looked up
    by an anchor of two consecutive non-zero components and then compared in
    full, so a hit is the whole vector. Vectors without such an anchor cannot
    be searched for and are skipped.

    Returns
    -------
    hits : list of (path, offset, row): ``row`` indexes ``vectors``.
    scanned : (files, bytes) read; files under a folder of ``skip``, and the files
        ``skip_files`` names (paths relative to ``root``), are not.
    skipped : number of vectors without an anchor.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> v = np.array([[1.5, -2.0, 3.0]], np.float32)
    >>> _ = (d / "f.bin").write_bytes(b"xyz" + v.tobytes() + b"tail")
    >>> hits, scanned, skipped = find_vector_bytes(d, v)
    >>> [(p.name, off, row) for p, off, row in hits], scanned, skipped
    ([('f.bin', 3, 0)], (1, 19), 0)
    """
    return find_bytes(root, *vector_needles(vectors), chunk_bytes=chunk_bytes, skip=skip, skip_files=skip_files)


def find_bytes(root, needles: list, where: list, *, chunk_bytes: int = SCAN_CHUNK_BYTES, skip=(), skip_files=()):
    """Where any of ``needles`` (byte strings, anchored at ``where``) occurs whole in the files under ``root``.

    As :func:`find_vector_bytes`, for any bytes: :func:`vector_needles` and
    :func:`blob_needles` make the needles and their anchors.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> blob = bytes(range(1, 40))
    >>> _ = (d / "f.bin").write_bytes(b"ab" + blob)
    >>> hits, scanned, skipped = find_bytes(d, *blob_needles([blob, b"short"]))
    >>> [(p.name, off, row) for p, off, row in hits], scanned, skipped
    ([('f.bin', 2, 0)], (1, 41), 1)
    """
    patterns, skipped = _Patterns.of(needles, where)
    skip = [Path(root) / s for s in skip]
    skip_files = {Path(root) / s for s in skip_files}
    paths = [path for path in sorted(p for p in Path(root).rglob("*") if p.is_file())
             if path not in skip_files and not any(path.is_relative_to(s) for s in skip)]
    total = sum(path.stat().st_size for path in paths)
    hits = []
    if len(patterns.anchors):
        def scan(path):
            found = _find_few(path, patterns) if len(patterns.anchors) <= FEW_VECTORS else \
                _scan_file(path, patterns, chunk_bytes)
            return [(path, off, row) for off, row in found]

        # numpy and the reads release the GIL: files scan side by side, one per core
        with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
            for found in pool.map(scan, paths):
                hits += found
    return hits, (len(paths), total), skipped


def _scan_file(path: Path, patterns: _Patterns, chunk_bytes: int):
    chunk_bytes = max(64, chunk_bytes - chunk_bytes % 4)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        for base in range(0, size, chunk_bytes):
            buf = os.pread(fd, chunk_bytes + 8 + 3, base)  # +8+3: windows across the chunk's end
            for shift in range(4):
                n_words = min((len(buf) - shift) // 4, chunk_bytes // 4 + 1)
                if n_words < 2:
                    continue
                words = np.frombuffer(buf, np.uint32, n_words, shift)
                # windows whose first word may start an anchor (~m in 2**FILTER_BITS, plus
                # words that are common in the data), then the 8-byte window at each
                pos = np.flatnonzero(patterns.bitmap[_bucket(words[:-1])])
                w = words[pos].astype(np.uint64) | (words[pos + 1].astype(np.uint64) << np.uint64(32))
                i = np.minimum(np.searchsorted(patterns.anchors, w), len(patterns.anchors) - 1)
                pos, w = pos[patterns.anchors[i] == w], w[patterns.anchors[i] == w]
                for p, window in zip(pos.tolist(), w):  # true anchor matches only: rare
                    yield from _confirm(fd, size, base + shift + 4 * p, window, patterns)


def _find_few(path: Path, patterns: _Patterns):
    """The scan for a few vectors: each anchor looked for by ``bytes.find`` (memchr speed, every offset).

    For one vector it reads a file 5-10x faster than the filter of
    :func:`_scan_file`, which pays for every word whatever the number of vectors.
    """
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size < 8:
            return
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
            for anchor in np.unique(patterns.anchors):
                needle = anchor.tobytes()  # little-endian: the two words in the order they are stored
                at = view.find(needle)
                while at >= 0:
                    yield from _confirm(fd, size, at, anchor, patterns)
                    at = view.find(needle, at + 1)


def _confirm(fd, size: int, at: int, window, patterns: _Patterns):
    """Compare in full every needle whose anchor equals the window at file offset ``at``."""
    lo = np.searchsorted(patterns.anchors, window, "left")
    hi = np.searchsorted(patterns.anchors, window, "right")
    for i in range(lo, hi):
        needle = patterns.needles[i]
        start = at - int(patterns.where[i])
        if start < 0 or start + len(needle) > size:
            continue
        if os.pread(fd, len(needle), start) == needle:
            yield start, int(patterns.rows[i])


def held_by(data, vectors: np.ndarray) -> np.ndarray:
    """(m,) bool: which of ``vectors`` equal, byte for byte, a vector of the data table."""
    from .snapshot import vectors_as_numpy  # not from search: that imports torch

    vectors = np.ascontiguousarray(vectors, np.float32)
    want = {v.tobytes(): i for i, v in enumerate(vectors)}
    held = np.zeros(len(vectors), bool)
    for batch in data.to_batches(columns=["vector"]):
        block = vectors_as_numpy(batch.column(0))
        for r in np.flatnonzero(np.isin(block[:, 0], vectors[:, 0])):  # cheap first test
            i = want.get(block[r].tobytes())
            if i is not None:
                held[i] = True
    return held


def as_scanned(stored: np.ndarray) -> np.ndarray:
    """The bytes the scan looks for, as float32 words: float16 vectors are read two values to a word.

    A float16 vector of odd length leaves its last value out (the rest is
    still a long, exact byte pattern).
    """
    if stored.dtype == np.float32:
        return stored
    even = stored[:, :stored.shape[1] - stored.shape[1] % 2]
    return np.ascontiguousarray(even).view(np.float32)


def verify(store, vectors: np.ndarray, data, stored: np.ndarray | None = None, *,
           untouched=frozenset(), thumbnails: list = ()) -> tuple[tuple[int, int], int, int]:
    """Raise ForgetError if a forgotten vector's or thumbnail's bytes are in any file but ``untouched``.

    ``vectors`` are float32, ``stored`` as the data table holds them (default:
    the same). ``thumbnails``: the forgotten rows' thumbnails (bytes), looked
    for in the same pass over the files. ``untouched``: data files that held
    none of the rows (see :func:`holders_gone`), not read again. Returns the
    scan's (files, bytes), the needles that could not be searched for, and
    those still held by a kept row (duplicates).
    """
    needles, where = vector_needles(as_scanned(vectors if stored is None else stored))
    blobs, blob_where = blob_needles(list(thumbnails))
    hits, scanned, skipped = find_bytes(store.path, needles + blobs, where + blob_where,
                                        skip=(PENDING_DIR,), skip_files=untouched)
    if not hits:
        return scanned, skipped, 0
    m = len(needles)
    rows = np.unique([row for _, _, row in hits])
    vector_rows, blob_rows = rows[rows < m], rows[rows >= m]
    held = np.concatenate([held_by(data, vectors[vector_rows]),
                           thumbnails_held_by(data, [blobs[r - m] for r in blob_rows])])
    not_held = set(rows[~held].tolist())
    bad = [(p, off, row) for p, off, row in hits if row in not_held]
    if bad:
        where = sorted({str(p.relative_to(store.path)) for p, _, _ in bad})
        n_vectors = len({r for _, _, r in bad if r < m})
        n_thumbs = len({r for _, _, r in bad if r >= m})
        what = " and ".join(part for part in (f"{n_vectors} forgotten vector(s)" if n_vectors else "",
                                               f"{n_thumbs} forgotten thumbnail(s)" if n_thumbs else "") if part)
        raise ForgetError(
            f"after erasing, the bytes of {what} are still in "
            f"{len(where)} file(s) under {str(store.path)!r}, e.g. {where[:3]}. The rows are gone from "
            "every version but their bytes are not. If memstore did not write these files, delete them "
            "yourself; if it did, this is a bug: please report it with the file names")
    return scanned, skipped, int(held.sum())


def thumbnails_held_by(data, blobs: list) -> np.ndarray:
    """(m,) bool: which of ``blobs`` equal the thumbnail of a row the data table keeps."""
    from .thumbnails import THUMBNAIL_COLUMN, has_thumbnails

    held = np.zeros(len(blobs), bool)
    if not blobs or not has_thumbnails(data.schema):
        return held
    want = {b: i for i, b in enumerate(blobs)}
    for batch in data.to_batches(columns=[THUMBNAIL_COLUMN]):
        for value in batch.column(0).to_pylist():
            i = want.get(value)
            if i is not None:
                held[i] = True
    return held


def holders_gone(store, holders: Holders) -> tuple[int, int]:
    """Raise ForgetError if a data file that held a forgotten row is still on disk.

    Returns (files checked gone, bytes of the untouched data files). With this
    and the scan of every other file, the proof costs what the forget touched:
    a data file of sample_data either held a row (it must be gone: its
    fragment was rewritten without the row and cleanup removed the old file)
    or held none (Lance never changes a file, so it still holds none).
    """
    left = sorted(p for p in holders.held if (store.path / p).exists())
    if left:
        raise ForgetError(
            f"after erasing, {len(left)} data file(s) that held forgotten rows are still under "
            f"{str(store.path)!r}, e.g. {left[:3]}: the cleanup did not remove them. This is a bug: "
            "please report it with the file names")
    untouched = sum((store.path / p).stat().st_size for p in holders.untouched if (store.path / p).exists())
    return len(holders.held), untouched


def forget_rows(store, ids: np.ndarray, message: str | None, sql: str | None, *,
                rebuild_index=None) -> ForgetReport:
    """Erase ``ids`` from the memory in ``store``; see the module docstring for the steps."""
    from .snapshot import vectors_as_numpy  # not from search: that imports torch

    seconds = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    with store.transaction() as tx:  # which first finishes any forget left unfinished
        ids = np.unique(np.asarray(ids, np.int64))
        if not tx.has_table(DATA_TABLE):
            raise UnknownIdsError(f"the memory holds no rows yet, so ids {ids[:5].tolist()} are not rows "
                                  "of it; nothing was forgotten")
        data = tx.table(DATA_TABLE).to_lance()
        found = rows_to_forget(data, ids)
        data_fragments = fragments_of(found["_rowaddr"].to_numpy())
        holders = Holders.of(data, data_fragments)
        stored = vectors_as_numpy(found["vector"], stored=True)
        vectors = stored.astype(np.float32, copy=False)
        thumbnails = thumbnails_of(found)
        n_alive, state_fragments = state_rows(tx.table(STATE_TABLE).to_lance(), ids)
        write_pending(store, tx.version, found["id"].to_numpy(), stored, thumbnails)
        lap("select")
        erase(tx, ids)
        lap("erase")
        compact(store, DATA_TABLE, data_fragments)
        compact(store, STATE_TABLE, state_fragments, defer_index_remap=True)
        tx.rebuild_id_index = False  # 1.4 s at 10M state rows: the next write rebuilds it
        lap("compact")
        details = {"forgotten": len(ids), "alive_at_forget": n_alive,
                   "vector_sha256": dict(zip(map(str, found["id"].to_pylist()), vector_hashes(vectors)))}
        head = tx.commit("forget", message, rows_affected=len(ids), rows_total=tx.head.rows_total - n_alive,
                         sql=sql, details=details)
        lap("commit")
        store.cleanup(head)
        lap("cleanup")
        replaced, untouched = holders_gone(store, holders)
        (files, size), skipped, held = verify(store, vectors, store.dataset(DATA_TABLE), stored,
                                              untouched=holders.untouched, thumbnails=thumbnails)
        clear_pending(store)  # last: until here, the next writer would finish this forget
        lap("verify")
    if rebuild_index is not None:
        rebuild_index()
        with store.lock():
            store.cleanup(store.head())
            replaced, untouched = holders_gone(store, holders)
            (files, size), skipped, held = verify(store, vectors, store.dataset(DATA_TABLE), stored,
                                                  untouched=holders.untouched, thumbnails=thumbnails)
        lap("rebuild_index")
    return ForgetReport(version=head.version, rows=len(ids), rows_alive=n_alive, files_scanned=files,
                        bytes_scanned=size, unverifiable=skipped, still_held=held, seconds=seconds,
                        files_replaced=replaced, bytes_untouched=untouched, thumbnails=len(thumbnails))


__all__ = ["ForgetReport", "find_vector_bytes", "forget_rows", "vector_hashes"]

"""A read-only view of a memory at one version.

Reads go to the Lance tables exactly as the head commit left them, filtered to
the rows valid at the snapshot's version (see versioning.py). The narrow state
of the version (id, label, weight) is read once and kept: it is what queries
and heads read most, and it is small (about 20 bytes a row). Vectors and
provenance stay in Lance and are read on demand with projection push-down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import (
    AUDIT_TABLE,
    DATA_TABLE,
    STATE_COLUMNS,
    STATE_TABLE,
    TAGS_TABLE,
    TAXONOMY_TABLE,
    VECTOR_DTYPES,
    state_schema,
)
from .versioning import Head, Store


def _ascending(a: np.ndarray) -> bool:
    return bool(len(a) < 2 or (a[1:] > a[:-1]).all())


#: above this many ids, Snapshot.state_of reads the whole state: at 1M state rows a read of
#: all of them took 32 ms, a filter of 10,000 ids 70 ms and of 100,000 ids 613 ms
STATE_OF_MAX_IDS = 1_000


def valid_at(version: int) -> str:
    """Lance/DuckDB filter of the interval rows valid at ``version``."""
    return f"valid_from <= {version} AND (valid_to IS NULL OR valid_to > {version})"


def vectors_as_numpy(column: pa.ChunkedArray | pa.Array, *, stored: bool = False) -> np.ndarray:
    """A fixed_size_list<float32|float16>[dim] column as (n, dim) numpy.

    float32 by default: zero copy for one float32 chunk; float16 vectors are
    widened (searches compute in float32). ``stored=True`` keeps the stored type.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.list_size
    flat = column.flatten()  # a slice of the child array: no copy, offset respected
    x = flat.to_numpy(zero_copy_only=flat.null_count == 0).reshape(-1, dim)
    return x if stored else x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Samples:
    """The rows alive at one version, ordered by id, as the heads read them."""

    ids: np.ndarray  # (n,) int64, ascending
    offsets: np.ndarray  # (n,) int64 row offsets into the data table, for take()
    vectors: np.ndarray  # (n, dim) float32, a view of the Arrow buffer where it came in one chunk
    labels: pa.Array  # (n,) string or int64
    weights: np.ndarray  # (n,) float32

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(positions, known) of ``ids`` among these rows; a position is only meaningful where known."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        known = self.ids[pos] == ids if len(self.ids) else np.zeros(len(ids), bool)
        return pos, known


def _take_into(out: dict, table: pa.Table, names: list[str]) -> None:
    """Put ``names`` of ``table`` into ``out``, in the order of ``out["id"]`` (every id is in ``table``)."""
    where = pc.index_in(out["id"], table["id"])
    for name in names:
        out[name] = table[name].take(where)


class Snapshot:
    def __init__(self, store: Store, head: Head, version: int):
        self.store = store
        self.head = head
        self.version = version

    def _dataset(self, name: str) -> lance.LanceDataset:
        return self.store.dataset(name, self.head.lance_versions[name])

    @property
    def has_samples(self) -> bool:
        return DATA_TABLE in self.head.lance_versions

    @cached_property
    def data(self) -> lance.LanceDataset | None:
        """``sample_data`` at the head: every row ever added and not forgotten."""
        return self._dataset(DATA_TABLE) if self.has_samples else None

    @cached_property
    def state(self) -> pa.Table:
        """(id, label, weight, wrong_count, valid_from) of the rows alive at this version.

        ``wrong_count`` is missing from a memory opened read-only before migration 0003.
        """
        if not self.has_samples:
            schema = state_schema(pa.string())
            return schema.empty_table().select([*STATE_COLUMNS, "valid_from"])
        return self._read_state(valid_at(self.version))

    def state_of(self, ids: np.ndarray) -> pa.Table:
        """The rows of ``state`` for ``ids`` only (those alive at this version).

        A small write reads just the rows it changes: Lance filters the id
        column instead of materializing every row's state. For many ids the
        list would cost more than it saves, so the whole state is read.
        """
        if not self.has_samples or len(ids) > STATE_OF_MAX_IDS or "state" in self.__dict__:
            return self.state
        listed = ", ".join(str(int(i)) for i in np.unique(ids))
        return self._read_state(f"id IN ({listed}) AND {valid_at(self.version)}")

    def _read_state(self, where: str) -> pa.Table:
        dataset = self._dataset(STATE_TABLE)
        columns = [c for c in (*STATE_COLUMNS, "valid_from") if c in dataset.schema.names]
        return dataset.to_table(columns=columns, filter=where)

    @cached_property
    def samples(self) -> Samples:
        """Vectors, labels and weights of this version, read once and kept."""
        state = self.state
        order = pc.sort_indices(state["id"])
        state = state.take(order)
        ids = state["id"].to_numpy()
        if not self.has_samples or not len(ids):
            return Samples(ids, ids, np.zeros((0, self.dim or 0), np.float32),
                           state["label"].combine_chunks(), np.zeros(0, np.float32))
        data = self.data.to_table(columns=["id", "vector"])
        offsets = np.arange(data.num_rows, dtype=np.int64)
        data_ids = data["id"].to_numpy()
        if data.num_rows != len(ids) or not np.array_equal(data_ids, ids):
            # rows pruned before (or added after) this version: keep the live ones, in id order
            where = np.searchsorted(data_ids, ids) if _ascending(data_ids) else None
            if where is None or not np.array_equal(data_ids[np.minimum(where, len(data_ids) - 1)], ids):
                order = np.argsort(data_ids, kind="stable")
                where = order[np.searchsorted(data_ids, ids, sorter=order)]
            offsets = offsets[where]
            data = data.take(where)
        return Samples(
            ids=ids,
            offsets=offsets,
            vectors=vectors_as_numpy(data["vector"]),
            labels=state["label"].combine_chunks(),
            weights=state["weight"].to_numpy().astype(np.float32, copy=False),
        )

    def take(self, ids, columns: list[str] | None = None) -> pa.Table:
        """The rows ``ids`` alive at this version, in the order given: id and ``columns``.

        Read by id through Lance filters (zone maps over the id-ordered
        fragments), not by a scan: a few rows of a million-row memory cost
        milliseconds. ``columns``: of sample_data (vector, provenance,
        thumbnail, added_in) and of the state (label, weight, wrong_count);
        default those of ``samples`` but the vector.
        """
        from .errors import InvalidInputError, UnknownIdsError
        from .forget import id_filter

        ids = np.asarray(ids, np.int64).reshape(-1)
        data_names = self.data.schema.names if self.has_samples else ["id"]
        state_names = [c for c in STATE_COLUMNS if c != "id"]
        if columns is None:  # as ``samples`` shows them
            columns = state_names + self.provenance_columns
        unknown = [c for c in columns if c not in data_names and c not in state_names]
        if unknown:
            raise InvalidInputError(f"cannot take columns {unknown}: the columns are "
                                    f"{sorted(set(data_names) | set(state_names))}")
        state = self.state_of(ids if len(ids) else np.array([-1]))  # no id is -1: an empty table, typed
        if state.num_rows > len(ids):  # the whole state, read before: only the rows asked for (hashing the few)
            state = state.filter(pc.is_in(state["id"], value_set=pa.array(ids, pa.int64())))
        alive = pc.is_in(pa.array(ids, pa.int64()), value_set=state["id"]).to_numpy(zero_copy_only=False)
        if not alive.all():
            raise UnknownIdsError(f"ids {ids[~alive][:10].tolist()} are not rows of version {self.version}")
        out = {"id": pa.array(ids, pa.int64())}
        wanted = [c for c in columns if c in data_names and c != "id"]  # none without sample_data
        if wanted:  # only state columns asked: sample_data is not read
            parts = [self.data.to_table(columns=["id", *wanted], filter=f) for f in id_filter(np.unique(ids))]
            data = pa.concat_tables(parts) if parts else self.data.to_table(columns=["id", *wanted], filter="id < 0")
            _take_into(out, data, wanted)
        _take_into(out, state, [c for c in columns if c in state_names])
        return pa.table({c: out[c] for c in ["id", *[c for c in columns if c != "id"]]})

    @property
    def state_dataset(self) -> lance.LanceDataset:
        """``sample_state`` at the head: every interval of every row (``history`` filters it)."""
        return self._dataset(STATE_TABLE)

    def history(self) -> pa.Table:
        """Every state row up to this version; ``valid_to`` null where it still holds at this version."""
        if not self.has_samples:
            return state_schema(pa.string()).empty_table()
        rows = self._dataset(STATE_TABLE).to_table(filter=f"valid_from <= {self.version}")
        valid_to = rows["valid_to"]
        later = pc.fill_null(pc.greater(valid_to, self.version), False)
        rows = rows.set_column(rows.schema.get_field_index("valid_to"), "valid_to",
                               pc.if_else(later, pa.scalar(None, valid_to.type), valid_to))
        return rows.sort_by([("id", "ascending"), ("valid_from", "ascending")])

    def state_history(self, filter: str | None = None) -> pa.Table:
        """Every state row (all versions) matching ``filter``."""
        return self._dataset(STATE_TABLE).to_table(filter=filter)

    @property
    def dim(self) -> int | None:
        return self.data.schema.field("vector").type.list_size if self.has_samples else None

    @property
    def vector_dtype(self) -> str | None:
        """``"float32"`` or ``"float16"``: the stored type of the vectors."""
        if not self.has_samples:
            return None
        stored = self.data.schema.field("vector").type.value_type
        return next(name for name, arrow_type in VECTOR_DTYPES.items() if arrow_type == stored)

    @property
    def label_type(self) -> pa.DataType | None:
        if not self.has_samples:
            return None
        return self._dataset(STATE_TABLE).schema.field("label").type

    @property
    def provenance_columns(self) -> list[str]:
        """Data columns shown in ``samples`` besides id and vector, in table order."""
        if not self.has_samples:
            return []
        return [n for n in self.data.schema.names if n not in ("id", "vector", "added_in")]

    @cached_property
    def taxonomy(self) -> pa.Table | None:
        if TAXONOMY_TABLE not in self.head.lance_versions:
            return None
        return self._dataset(TAXONOMY_TABLE).to_table(
            columns=["node", "parent", "name", "level"], filter=valid_at(self.version)
        )

    @cached_property
    def audit(self) -> pa.Table:
        """The commit log up to this version, without the internal Lance bookkeeping."""
        return self.read_audit()

    def read_audit(self, columns: list[str] | None = None) -> pa.Table:
        """``columns`` (default: all the user sees) of the commit log up to this version.

        The Lance bookkeeping (a JSON per version) is most of the log's bytes, so
        it is never read here; ``versions()`` reads fewer columns still.
        """
        dataset = self.store.dataset(AUDIT_TABLE)
        if columns is None:
            columns = [c for c in dataset.schema.names if c not in ("lance_versions", "next_id")]
        table = dataset.to_table(columns=columns, filter=f"version <= {self.version}")
        return table.sort_by("version")

    def tags(self) -> pa.Table:
        return self.store.dataset(TAGS_TABLE).to_table().sort_by("version")

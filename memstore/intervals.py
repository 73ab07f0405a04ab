"""Changes to the interval tables (``sample_state``, ``taxonomy``).

An interval row says: from memory version ``valid_from`` until (not including)
``valid_to``, this row held. Changing a sample at version ``w`` closes its open
row (``valid_to = w``) and, unless the sample is pruned, appends a new open row
from ``w``. Both happen in one Lance ``merge_insert`` keyed on
(key, valid_from), which is unique per row. Nothing is ever rewritten but these
narrow rows, so a reweight of every sample leaves the vectors untouched.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: at most this many ids are changed by update + append; more by one merge (a filter listing
#: many ids costs more than the merge's join: see snapshot.STATE_OF_MAX_IDS)
SMALL_CHANGE = 1_000


def change_state(table, version: int, current: pa.Table, ids: np.ndarray, *,
                 labels: pa.Array | None = None, weights: np.ndarray | None = None,
                 wrong_counts: np.ndarray | None = None, delete: bool = False) -> int:
    """Close the open state rows of ``ids`` at ``version``; reopen them with new values.

    ``current`` is the state at the head (Snapshot.state), and every id must be
    in it. Returns the number of samples changed.
    """
    positions = pc.index_in(pa.array(ids, pa.int64()), current["id"])
    old = current.take(positions)
    n = len(old)
    parts = [_with(old, table.schema, valid_to=version)]
    if not delete:
        new = old
        if labels is not None:
            new = new.set_column(new.schema.get_field_index("label"), "label",
                                 labels.cast(new.schema.field("label").type))
        if weights is not None:
            new = new.set_column(new.schema.get_field_index("weight"), "weight",
                                 pa.array(weights, pa.float32()))
        if wrong_counts is not None:
            new = new.set_column(new.schema.get_field_index("wrong_count"), "wrong_count",
                                 pa.array(wrong_counts, pa.int32()))
        parts.append(_with(new, table.schema, valid_from=version, valid_to=None))
    if n > SMALL_CHANGE:
        _merge(table, pa.concat_tables(parts), key="id")
        return n
    # A few ids: close their open rows by an update the id index serves, then append the new
    # ones. A merge would join every row the table ever held (100 ms at 1.1M rows against 28).
    # Two Lance commits, but the memory version is committed by the audit row alone.
    listed = ", ".join(str(int(i)) for i in old["id"].to_numpy())
    table.update(where=f"id IN ({listed}) AND valid_to IS NULL", values={"valid_to": version})
    if len(parts) > 1:
        table.add(parts[1])
    return n


def close(table, rows: pa.Table, version: int, key: str) -> None:
    """Close open interval rows at ``version``."""
    _merge(table, _with(rows, table.schema, valid_to=version), key=key)


def reopen(table, rows: pa.Table, version: int) -> None:
    """Append rows open from ``version`` (restore: copies of earlier rows; set_taxonomy: new ones)."""
    if len(rows):
        table.add(_with(rows, table.schema, valid_from=version, valid_to=None))


_KEEP = object()


def _with(rows: pa.Table, schema: pa.Schema, valid_from=_KEEP, valid_to=_KEEP) -> pa.Table:
    """``rows`` in ``schema``'s column order, with the interval bounds replaced."""
    n = len(rows)
    arrays = []
    for field in schema:
        if field.name == "valid_from" and valid_from is not _KEEP:
            arrays.append(pa.repeat(pa.scalar(valid_from, pa.int64()), n))
        elif field.name == "valid_to" and valid_to is not _KEEP:
            arrays.append(pa.nulls(n, pa.int64()) if valid_to is None
                          else pa.repeat(pa.scalar(valid_to, pa.int64()), n))
        else:
            arrays.append(rows[field.name].cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _merge(table, rows: pa.Table, key: str) -> None:
    if len(rows):
        (table.merge_insert([key, "valid_from"])
         .when_matched_update_all()
         .when_not_matched_insert_all()
         .execute(rows))

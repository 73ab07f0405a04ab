"""Arrow schemas of the tables a memory keeps on disk.

A memory is a directory with one LanceDB database in ``tables/``:

``sample_data``   one row per sample, written once and never changed (until
                  ``forget`` erases it): id, vector, provenance, ``added_in``.
``sample_state``  the narrow, often-changing part: id, label, weight,
                  wrong_count (memstore.quality), and the
                  half-open interval of memory versions ``[valid_from, valid_to)``
                  in which that label/weight held. A reweight closes intervals and
                  appends new ones; it never rewrites a vector.
``taxonomy``      label hierarchy rows, versioned the same way (migration 0002).
``audit``         one row per memory version: the commit log (see versioning.py).
``tags``          names for memory versions.
``checksums``     SHA-256 of every file the other tables' Lance writes made
                  (migration 0004; verified by ``mem.check()``, see check.py).

The user-facing ``samples`` table of ``mem.sql`` is the join of data and state
at one version; its columns are ``SAMPLE_COLUMNS`` plus any extra provenance.
"""

from __future__ import annotations

import pyarrow as pa

DATA_TABLE = "sample_data"
STATE_TABLE = "sample_state"
AUDIT_TABLE = "audit"
TAGS_TABLE = "tags"
TAXONOMY_TABLE = "taxonomy"
CHECKSUMS_TABLE = "checksums"

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: provenance columns every sample has; user columns beyond these are "extra".
PROVENANCE_COLUMNS = ("uri", "dataset", "split", "content_hash", "added_at")
#: columns that change over versions and are kept in the narrow state table.
STATE_COLUMNS = ("id", "label", "weight", "wrong_count")
#: names a user's extra provenance columns may not take.
RESERVED_COLUMNS = frozenset(
    {"id", "vector", "label", "weight", "wrong_count", "valid_from", "valid_to", "added_in", *PROVENANCE_COLUMNS}
)


#: how vectors may be stored: float16 halves the disk and I/O of large memories
#: (kNN-LM datastores); searches compute in float32 either way
VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def vector_type(dim: int, dtype: str = "float32") -> pa.DataType:
    return pa.list_(VECTOR_DTYPES[dtype], dim)


def data_schema(dim: int, extra_fields: list[pa.Field] = (), vector_dtype: str = "float32") -> pa.Schema:
    """Schema of ``sample_data`` for vectors of ``dim`` and the user's extra columns."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("vector", vector_type(dim, vector_dtype), nullable=False),
            pa.field("uri", pa.string()),
            pa.field("dataset", pa.string()),
            pa.field("split", pa.string()),
            pa.field("content_hash", pa.string()),
            pa.field("added_at", TIMESTAMP),
            pa.field("added_in", pa.int64(), nullable=False),
            *extra_fields,
        ]
    )


def state_schema(label_type: pa.DataType) -> pa.Schema:
    """Schema of ``sample_state``; labels are class names (string) or integer ids (int64)."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("label", label_type),
            pa.field("weight", pa.float32(), nullable=False),
            # how often the row was a wrong-label neighbour (memstore.quality); null:
            # not estimated since the row was added (migration 0003)
            pa.field("wrong_count", pa.int32()),
            pa.field("valid_from", pa.int64(), nullable=False),
            pa.field("valid_to", pa.int64()),  # null: still valid at the head
        ]
    )


AUDIT_SCHEMA = pa.schema(
    [
        pa.field("version", pa.int64(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("operation", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("rows_affected", pa.int64(), nullable=False),
        pa.field("rows_total", pa.int64(), nullable=False),
        pa.field("sql", pa.string()),  # the SELECT that chose the rows, where one did
        pa.field("details", pa.string()),  # JSON: operation-specific facts
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("user", pa.string()),
        pa.field("next_id", pa.int64(), nullable=False),  # ids are never reused
        # JSON {table: lance version}: the exact Lance commit of every table that
        # this memory version consists of. Internal; not shown by mem.sql.
        pa.field("lance_versions", pa.string(), nullable=False),
    ]
)

TAGS_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
    ]
)

TAXONOMY_SCHEMA = pa.schema(
    [
        pa.field("node", pa.string(), nullable=False),
        pa.field("parent", pa.string()),
        pa.field("name", pa.string()),
        pa.field("level", pa.int32(), nullable=False),
        pa.field("valid_from", pa.int64(), nullable=False),
        pa.field("valid_to", pa.int64()),
    ]
)

#: one row per file a commit made: what ``check()`` compares the file with
CHECKSUMS_SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("bytes", pa.int64(), nullable=False),
    pa.field("version", pa.int64(), nullable=False),
])

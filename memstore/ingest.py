"""Turn what a user hands to ``mem.add`` into validated Arrow columns.

Accepted vectors: a 2-d numpy array, a torch tensor, an Arrow
``fixed_size_list<float>`` array (or chunked array, or a list array of equal
lengths), a list of lists, or an Arrow table / record batch with a ``vector``
column (its ``label``, ``weight`` and other columns then fill the rest).
Everything is checked before anything is written: a bad batch changes nothing.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DimensionMismatchError, InvalidInputError, SQLResultError, UnknownIdsError
from .schema import PROVENANCE_COLUMNS, RESERVED_COLUMNS, TIMESTAMP

_USER_PROVENANCE = tuple(c for c in PROVENANCE_COLUMNS if c != "added_at")


@dataclass
class Batch:
    """A validated input: ``n`` rows, all columns of equal length."""

    vectors: np.ndarray  # (n, dim) float32, C-contiguous
    labels: pa.Array  # string or int64, no nulls
    weights: np.ndarray  # (n,) float32, finite, >= 0
    provenance: dict[str, pa.Array]  # uri, dataset, split, content_hash (may hold nulls)
    extras: dict[str, pa.Array]  # the user's own provenance columns

    def __len__(self) -> int:
        return len(self.vectors)


def prepare(vectors, labels=None, provenance=None, weights=None, *, dim=None, label_type=None,
            existing=()) -> Batch:
    """Validate and convert one ``add`` call's inputs.

    Parameters
    ----------
    dim, label_type : the memory's, or None for the first add, which sets them.
    existing : the names of the memory's provenance columns (a new column may not
        differ from one of them only by case).
    """
    columns: dict[str, Any] = {}
    if isinstance(vectors, (pa.Table, pa.RecordBatch)):
        table = vectors
        if "vector" not in table.column_names:
            raise InvalidInputError(
                f"the table passed to add has columns {table.column_names} and no 'vector' "
                "column; name the embedding column 'vector'"
            )
        vectors = table["vector"]
        columns = {n: table[n] for n in table.column_names if n != "vector"}
        if labels is None and "label" in columns:
            labels = columns.pop("label")
        if weights is None and "weight" in columns:
            weights = columns.pop("weight")
        columns.pop("label", None)
        columns.pop("weight", None)
    x = as_matrix(vectors, dim)
    n = len(x)
    if labels is None:
        raise InvalidInputError("add needs labels: pass labels=..., one per vector")
    merged = dict(columns)
    for key, value in (provenance or {}).items():
        merged[key] = value
    batch = Batch(
        vectors=x,
        labels=as_labels(labels, n, label_type),
        weights=as_weights(weights, n),
        provenance={},
        extras={},
    )
    check_column_names(merged, existing)
    for key, value in merged.items():
        if key in _USER_PROVENANCE:
            batch.provenance[key] = as_column(key, value, n, pa.string())
        elif key in RESERVED_COLUMNS:
            raise InvalidInputError(
                f"provenance column {key!r} is set by memstore and cannot be given; "
                f"the columns you may set are {list(_USER_PROVENANCE)} and your own names"
            )
        else:
            batch.extras[key] = as_column(key, value, n, None)
    return batch


def check_column_names(names, existing=()) -> None:
    """Refuse provenance names that SQL could not tell apart: DuckDB names are case-insensitive.

    A name whose lower case is one of memstore's columns (``URI``, ``ID``), two
    names of one add that differ only by case, and a name that differs from a
    column the memory already has only by case would all be stored but be
    unreachable (or ambiguous) in ``mem.sql``.
    """
    for key in names:
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"provenance column names are non-empty strings, got {key!r}")
        low = key.lower()
        if low in RESERVED_COLUMNS and key != low:
            hint = (f"name it {low!r}" if low in _USER_PROVENANCE
                    else f"{low!r} is set by memstore: choose another name")
            raise InvalidInputError(
                f"provenance column {key!r} differs from memstore's column {low!r} only by case, and SQL "
                f"names are case-insensitive, so it could not be queried; {hint}")
    seen: dict[str, str] = {}
    for key in names:
        other = seen.setdefault(key.lower(), key)
        if other != key:
            raise InvalidInputError(
                f"provenance columns {other!r} and {key!r} differ only by case, and SQL names are "
                "case-insensitive, so one could not be queried; merge them or rename one")
    have = {c.lower(): c for c in existing}
    for key in names:
        other = have.get(key.lower())
        if other is not None and other != key:
            raise InvalidInputError(
                f"provenance column {key!r} differs from the memory's column {other!r} only by case, and "
                f"SQL names are case-insensitive, so it could not be queried; name it {other!r}")


def check_vector_dtype(requested: str | None, stored: str | None) -> str:
    """The dtype an add writes: the memory's own, or for a new memory the one requested (float32 by default)."""
    from .schema import VECTOR_DTYPES

    if requested is not None and requested not in VECTOR_DTYPES:
        raise InvalidInputError(f"vector_dtype must be one of {sorted(VECTOR_DTYPES)}, got {requested!r}")
    if stored is not None and requested is not None and requested != stored:
        raise InvalidInputError(
            f"this memory stores {stored} vectors, not {requested}: leave vector_dtype out, "
            f"or open a new memory for {requested} vectors")
    return stored or requested or "float32"


#: the largest finite float16
FLOAT16_MAX = float(np.finfo(np.float16).max)


def check_float16_range(x: np.ndarray) -> None:
    """float16 holds magnitudes up to 65504: larger values would be stored as inf."""
    big = np.abs(x).max(axis=1) > FLOAT16_MAX
    if big.any():
        rows = np.flatnonzero(big)
        raise InvalidInputError(
            f"{len(rows)} vector(s) hold values beyond float16's range (|x| > {FLOAT16_MAX:g}), first at "
            f"row(s) {rows[:5].tolist()}: scale them, or store float32 (vector_dtype='float32')")


def as_matrix(vectors, dim: int | None) -> np.ndarray:
    """(n, dim) float32 C-contiguous, finite, non-empty; zero-copy where the input allows."""
    if hasattr(vectors, "detach") and hasattr(vectors, "cpu"):  # a torch tensor, without importing torch
        vectors = vectors.detach().cpu().numpy()
    if isinstance(vectors, pa.ChunkedArray):
        vectors = vectors.combine_chunks()
    if isinstance(vectors, (pa.FixedSizeListArray, pa.ListArray, pa.LargeListArray)):
        vectors = _arrow_matrix(vectors)
    x = np.asarray(vectors)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InvalidInputError(f"vectors must be numbers, got dtype {x.dtype}")
    if x.ndim == 1 and x.size and dim is not None and x.size == dim:
        raise InvalidInputError(
            f"vectors has shape {x.shape}: one vector must still be 2-d; pass x.reshape(1, -1)"
        )
    if x.ndim != 2:
        raise InvalidInputError(f"vectors must be 2-d (n, dim), got shape {x.shape}")
    if x.shape[0] == 0:
        raise InvalidInputError("empty batch: vectors has 0 rows; pass at least one vector")
    if x.shape[1] == 0:
        raise InvalidInputError(f"vectors has shape {x.shape}: a dimension of 0 cannot be searched")
    if dim is not None and x.shape[1] != dim:
        raise DimensionMismatchError(
            f"vectors have dimension {x.shape[1]} but this memory holds {dim}-d vectors; "
            f"encode with the same model, or open a new memory for {x.shape[1]}-d vectors"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InvalidInputError(
            f"{len(bad)} vector(s) hold NaN or inf, first at row(s) {bad[:5].tolist()}; "
            "drop or repair them before adding"
        )
    return x


def _arrow_matrix(arr) -> np.ndarray:
    if arr.null_count:
        raise InvalidInputError(f"{arr.null_count} vector(s) are null; drop them before adding")
    if isinstance(arr, pa.FixedSizeListArray):
        width = arr.type.list_size
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DimensionMismatchError(
                f"vectors have different lengths ({sorted(set(lengths.tolist()))[:5]}); "
                "every vector in a memory has the same dimension"
            )
        width = int(lengths[0]) if len(lengths) else 0
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(arr), width)


def as_labels(labels, n: int, label_type: pa.DataType | None) -> pa.Array:
    """Class names (string) or integer ids (int64), one per vector, no nulls."""
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    if isinstance(labels, (str, bytes)) or np.ndim(labels) == 0:
        labels = [labels] * n  # one label for the whole batch
    if isinstance(labels, (list, tuple)):
        labels = _python_labels(labels)  # by pyarrow itself: numpy's U dtype would cut at a NUL
    elif not isinstance(labels, pa.Array):
        arr = np.asarray(labels)
        if arr.dtype.kind in "iu":
            labels = pa.array(arr.astype(np.int64))
        elif arr.dtype.kind == "b" or arr.dtype.kind == "f":
            raise InvalidInputError(
                f"labels must be class names (str) or integer ids, got dtype {arr.dtype}; "
                "cast them, e.g. labels.astype(int)"
            )
        else:  # U/S/object arrays go through Python strings: pa.array(U array) cuts at a NUL
            labels = _python_labels(arr.tolist() if arr.dtype.kind in "UO" else arr.astype(str).tolist())
    if pa.types.is_dictionary(labels.type):
        labels = labels.dictionary_decode()
    if pa.types.is_integer(labels.type):
        labels = labels.cast(pa.int64())
    elif pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        labels = labels.cast(pa.string())
    else:
        raise InvalidInputError(
            f"labels must be class names (str) or integer ids, got Arrow type {labels.type}"
        )
    if len(labels) != n:
        raise InvalidInputError(f"got {n} vectors but {len(labels)} labels; pass one label per vector")
    if labels.null_count:
        raise InvalidInputError(f"{labels.null_count} label(s) are null; every row needs a label")
    if label_type is not None and labels.type != label_type:
        kind = "class names (str)" if pa.types.is_string(label_type) else "integer ids"
        raise InvalidInputError(
            f"this memory's labels are {kind} ({label_type}), got {labels.type}; "
            "convert the labels to the memory's type"
        )
    return labels


def _python_labels(values: list | tuple) -> pa.Array:
    """Labels from a Python sequence, converted by pyarrow (every character kept); ints and strs not mixed."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first_int = next(((i, v) for i, v in enumerate(values)
                          if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))), None)
        first_str = next(((i, v) for i, v in enumerate(values) if isinstance(v, str)), None)
        if first_int is not None and first_str is not None:
            raise InvalidInputError(
                f"labels mix integers and strings ({first_int[1]!r} at position {first_int[0]}, "
                f"{first_str[1]!r} at position {first_str[0]}); pass all class names (str), "
                "e.g. [str(x) for x in labels], or all integer ids") from None
        raise InvalidInputError(f"labels must be class names (str) or integer ids: {exc}") from None


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _beyond_int64(values) -> UnknownIdsError:
    big = [int(v) for v in values if not INT64_MIN <= int(v) <= INT64_MAX]
    return UnknownIdsError(
        f"{len(big)} id(s) are beyond int64 and so not rows of the memory, e.g. {big[:5]}; "
        "select ids FROM samples")


def id_array(values) -> pa.Array:
    """Ids given as an array or a sequence (not a SELECT), as an Arrow array of their own type."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    try:
        arr = np.asarray(values).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"ids must be a flat sequence of integers: {exc}") from None
    if arr.dtype == object and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                                   for v in arr):
        if any(not INT64_MIN <= int(v) <= INT64_MAX for v in arr):
            raise _beyond_int64(arr)  # Python ints beyond uint64 too
        arr = arr.astype(np.int64)
    try:
        return pa.array(arr)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidInputError(f"ids must be integers, got {arr.dtype} values: {exc}; "
                                "pass integer ids, e.g. ids.astype(np.int64)") from None


def int64_ids(ids, *, from_sql: bool) -> pa.Array:
    """An id column of any integer type (or DuckDB HUGEINT, a decimal of scale 0) as int64.

    Values beyond int64 are no ids of a memory: UnknownIdsError names them.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    t = ids.type
    if not (pa.types.is_integer(t) or (pa.types.is_decimal(t) and t.scale == 0)):
        shown = ", ".join(str(v) for v in ids.slice(0, 5).to_pylist())
        if from_sql:
            raise SQLResultError(
                f"ids must be integers, got {t} values ({shown}) from the SELECT; CAST them, "
                "e.g. SELECT CAST(x AS BIGINT) AS id")
        raise InvalidInputError(
            f"ids must be integers, got {t} values ({shown}); cast them, e.g. ids.astype(np.int64)")
    if ids.null_count:
        raise (SQLResultError if from_sql else InvalidInputError)(
            f"{ids.null_count} id(s) are NULL; every selected row needs an id (WHERE id IS NOT NULL)")
    if t == pa.int64():
        return ids
    try:
        return ids.cast(pa.int64())  # a safe cast: fails for values beyond int64
    except pa.ArrowInvalid:
        raise _beyond_int64(ids.to_pylist()) from None


def as_weights(weights, n: int) -> np.ndarray:
    """Quality weights in [0, inf), one per vector; default 1.0."""
    if weights is None:
        return np.ones(n, dtype=np.float32)
    if hasattr(weights, "detach") and hasattr(weights, "cpu"):
        weights = weights.detach().cpu().numpy()
    if isinstance(weights, (pa.Array, pa.ChunkedArray)):
        weights = weights.to_numpy(zero_copy_only=False)
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"weights must be numbers in [0, inf), got {str(weights)[:80]!r}; convert them, "
            "e.g. np.asarray(weights, float)") from None
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise InvalidInputError(f"got {n} vectors but weights of shape {w.shape}; pass one weight per vector")
    check_weights(w)
    return w.astype(np.float32)


#: the largest finite float32: weights are stored as float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_weights(w: np.ndarray) -> None:
    """Weights are finite, >= 0 and finite once stored as float32 (at most ~3.4e38)."""
    bad = ~(np.isfinite(w) & (w >= 0))
    if bad.any():
        first = np.flatnonzero(bad)[:5]
        raise InvalidInputError(
            f"weights must be finite and >= 0; got {w[first].tolist()} at position(s) "
            f"{first.tolist()}; use 0 to silence a row, or prune it"
        )
    with np.errstate(over="ignore"):
        big = np.isinf(w.astype(np.float32))
    if big.any():
        first = np.flatnonzero(big)[:5]
        raise InvalidInputError(
            f"weights are stored as float32, which holds at most {FLOAT32_MAX:g}; got "
            f"{', '.join(f'{v:g}' for v in w[first])} at position(s) {first.tolist()}, which would "
            "become inf; scale the weights down (only their ratios matter to the heads)"
        )


def as_column(name: str, value, n: int, arrow_type: pa.DataType | None) -> pa.Array:
    """A provenance column: a scalar repeated n times, or n values."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    try:
        if isinstance(value, (str, bytes, int, float, bool, datetime)) or value is None:
            arr = pa.array([value] * n, type=arrow_type)
        elif isinstance(value, pa.Array):
            arr = value
        elif type(value).__module__.partition(".")[0] == "pandas":
            arr = pa.array(value, from_pandas=True)  # NaN / None / NaT: null
        else:
            arr = pa.array(np.asarray(value).tolist() if hasattr(value, "shape") else list(value))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"provenance column {name!r} cannot be stored: {exc}; pass one value per vector of a "
            "single type (strings, numbers, booleans or timestamps), None for a missing one"
        ) from None
    if len(arr) != n:
        raise InvalidInputError(
            f"provenance column {name!r} has {len(arr)} values for {n} vectors; "
            "pass one value per vector or a single value for all"
        )
    if arrow_type is not None and arr.type != arrow_type:
        try:
            arr = arr.cast(arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInputError(f"provenance column {name!r} must be {arrow_type}: {exc}") from None
    if pa.types.is_null(arr.type):
        arr = arr.cast(pa.string())
    return arr


def vector_hashes(x: np.ndarray) -> pa.Array:
    """SHA-256 of each row's float32 bytes, first 128 bits in hex: the default content hash.

    SHA-256 because CPUs hash it in hardware (1.7 s per 1M x 512 here, against
    3.1 s for blake2b), and hashlib releases the GIL while it hashes.
    """
    rows = x.view(np.uint8).reshape(len(x), -1)
    return pa.array([hashlib.sha256(r).hexdigest()[:32] for r in rows], pa.string())


def batches(batch: Batch, ids: np.ndarray, version: int, now: datetime, schema: pa.Schema,
            size: int = 32768) -> Iterator[pa.RecordBatch]:
    """The ``sample_data`` record batches of one add, ``size`` rows at a time.

    Default content hashes are computed one batch ahead in a worker thread, so
    hashing overlaps with Lance encoding and writing the batch before.
    """
    starts = list(range(0, len(batch), size))
    if "content_hash" in batch.provenance:
        for start in starts:
            yield _record_batch(batch, ids, version, now, schema, start, size, hashes=None)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(vector_hashes, batch.vectors[:size])
        for start in starts:
            hashes = ahead.result()
            nxt = start + size
            if nxt < len(batch):
                ahead = pool.submit(vector_hashes, batch.vectors[nxt:nxt + size])
            yield _record_batch(batch, ids, version, now, schema, start, size, hashes)


def _record_batch(batch: Batch, ids, version, now, schema, start, size, hashes) -> pa.RecordBatch:
    x = batch.vectors[start:start + size]
    n = len(x)
    cols = {
        "id": pa.array(ids[start:start + n]),
        "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(x.reshape(-1).astype(schema.field("vector").type.value_type.to_pandas_dtype(), copy=False)),
            x.shape[1]),
        "added_at": pa.repeat(pa.scalar(now, TIMESTAMP), n),
        "added_in": pa.array(np.full(n, version, dtype=np.int64)),
    }
    for name, arr in {**batch.provenance, **batch.extras}.items():
        cols[name] = arr.slice(start, n)
    if hashes is not None:
        cols["content_hash"] = hashes
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

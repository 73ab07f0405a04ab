"""The JSON API and the page of ``memstore serve``: a memory seen from a browser or another process.

Every read takes a ``version`` (a number or a tag; default the newest), so
the page can show any version the memory keeps. Everything is built on
``Memory``'s public API: ``sql`` (the read-only sandbox) for rows, ``search``
for neighbours, ``KNNClassifier.explain`` for decisions, :mod:`memstore.diff`
for what changed.

Safe by default (see :func:`create_app`): read-only unless writes are
allowed, bounded requests and results, and, with tokens, no request without
one. Writes made through the server name the token in the audit row.
"""

from __future__ import annotations

import hmac
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import memstore
from memstore.diff import diff
from memstore.errors import (
    InvalidInputError,
    MemstoreError,
    QueryLimitError,
    ReadOnlyError,
    SQLError,
    UnknownIdsError,
    VersionNotFoundError,
)
from memstore.versioning import audit_user

STATIC = Path(__file__).resolve().parent / "static"
#: rows one page of samples (or one SQL result) may return
MAX_ROWS = 1_000
#: rows an SQL console query returns at most; more are cut and flagged
SQL_MAX_ROWS = 10_000
#: bytes of a request body, and characters of a query or a WHERE clause
MAX_BODY_BYTES = 1 << 20
MAX_QUERY_CHARS = 20_000
#: neighbours a request may ask for
MAX_K = 200
#: pinned versions (and fitted heads) kept open between requests
CACHED_VERSIONS = 8

_STATUS = [(VersionNotFoundError, 404), (UnknownIdsError, 404), (ReadOnlyError, 403),
           (QueryLimitError, 413), (SQLError, 400), (InvalidInputError, 400), (MemstoreError, 400)]


class SQLRequest(BaseModel):
    query: str = Field(max_length=MAX_QUERY_CHARS, examples=["SELECT label, count(*) FROM samples GROUP BY label"])
    version: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=MAX_ROWS, ge=1, le=SQL_MAX_ROWS)


class ForgetRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=MAX_ROWS)
    message: str | None = Field(default=None, max_length=2_000)


class Memories:
    """The served memory: a handle at the newest version, pinned handles and fitted heads, kept a while."""

    def __init__(self, path: Path, *, writable: bool):
        self.path = path
        self.writable = writable
        self.head = memstore.open(path, create=False, read_only=not writable)
        self.lock = threading.RLock()  # a Memory handle is used by one request at a time
        self._pinned: OrderedDict = OrderedDict()
        self._heads: OrderedDict = OrderedDict()

    def at(self, version: str | None):
        """The memory at ``version`` (a number, a tag name, or None for the newest), refreshed."""
        self.head.refresh()
        if version in (None, "", "head"):
            return self.head
        ref = int(version) if version.lstrip("-").isdigit() else version
        key = (self.head.version, ref)
        if key not in self._pinned:
            self._pinned[key] = self.head.at(ref)
        return _recent(self._pinned, key)

    def knn(self, mem, k: int, voting: str):
        """A KNNClassifier fitted on ``mem`` (fitting reads every vector once: kept for later requests)."""
        key = (mem.version, self.head.version, k, voting)
        if key not in self._heads:
            self._heads[key] = memstore.KNNClassifier(k=k, voting=voting).fit(mem)
        return _recent(self._heads, key)


def _recent(cache: OrderedDict, key):
    cache.move_to_end(key)
    while len(cache) > CACHED_VERSIONS:
        cache.popitem(last=False)
    return cache[key]


def create_app(path, *, tokens: dict[str, str] | None = None, allow_writes: bool = False) -> FastAPI:
    """The FastAPI app serving the memory at ``path``.

    Parameters
    ----------
    path : the memory's directory.
    tokens : name -> secret. When given, every request must carry one secret,
        as ``Authorization: Bearer <secret>`` (or ``?token=`` for the page's links),
        and writes name the token in the audit row.
    allow_writes : serve ``POST /api/forget``; without it the server refuses writes.

    Examples
    --------
    >>> import numpy as np, tempfile, memstore
    >>> from fastapi.testclient import TestClient
    >>> path = tempfile.mkdtemp() + "/s.mem"
    >>> _ = memstore.open(path).add(np.eye(3, dtype="f4"), ["a", "b", "b"])
    >>> TestClient(create_app(path)).get("/api/overview").json()["rows"]
    3
    """
    memories = Memories(Path(path), writable=allow_writes)
    app = FastAPI(title="memstore", version=_version(),
                  description=f"The memory at {path}: samples, neighbours, decisions, versions and SQL.")
    caller = _authenticate(tokens)

    @app.exception_handler(MemstoreError)
    def memstore_error(request: Request, exc: MemstoreError):
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"error": "TooLarge", "detail": f"a request body is at most {MAX_BODY_BYTES} "
                                 "bytes; send fewer ids or a shorter query"}, status_code=413)
        return await call_next(request)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/overview")
    def overview(version: str | None = Query(None, max_length=200), who: str = Depends(caller)):
        """Rows, labels with counts, versions, tags, size on disk and the index of a version."""
        with memories.lock:
            mem = memories.at(version)
            info = mem.info()
            labels = mem.sql("SELECT label, count(*) AS rows FROM samples GROUP BY label ORDER BY rows DESC, label")
            info.update(labels=_rows(labels.to_arrow_table()), index=mem.index_info(),
                        writable=memories.writable, columns=_columns(mem))
            return _clean(info)

    @app.get("/api/samples")
    def samples(version: str | None = Query(None, max_length=200),
                where: str | None = Query(None, max_length=MAX_QUERY_CHARS,
                                          description="an SQL condition on samples' columns"),
                order: str = Query("id", max_length=200), descending: bool = False,
                offset: int = Query(0, ge=0, le=10**12), limit: int = Query(100, ge=1, le=MAX_ROWS),
                who: str = Depends(caller)):
        """A page of rows (without vectors), filtered by ``where`` and sorted by ``order``."""
        with memories.lock:
            mem = memories.at(version)
            columns = _columns(mem)
            if order not in columns:
                raise InvalidInputError(f"cannot sort by {order!r}: the columns are {columns}")
            condition = f"WHERE ({where})" if where and where.strip() else ""
            total = mem.sql(f"SELECT count(*) FROM samples {condition}").fetchall()[0][0]
            page = mem.sql(f'SELECT * EXCLUDE (vector) FROM samples {condition} ORDER BY "{order}" '
                           f'{"DESC" if descending else "ASC"}, id LIMIT {limit} OFFSET {offset}')
            return _clean({"version": mem.version, "total": total, "offset": offset,
                           "rows": _rows(page.to_arrow_table())})

    @app.get("/api/rows/{row_id}")
    def row(row_id: int, version: str | None = Query(None, max_length=200), k: int = Query(10, ge=1, le=MAX_K),
            who: str = Depends(caller)):
        """A row: its provenance, its label and weight across versions, and its nearest neighbours."""
        with memories.lock:
            mem = memories.at(version)
            found = mem.sql(f"SELECT * EXCLUDE (vector) FROM samples WHERE id = {row_id}").to_arrow_table()
            history = _rows(mem.sql(f"SELECT label, weight, wrong_count, valid_from, valid_to FROM history "
                                    f"WHERE id = {row_id} ORDER BY valid_from").to_arrow_table())
            if not found.num_rows:
                raise UnknownIdsError(f"row {row_id} is not in version {mem.version}"
                                      + (" (it was pruned; its history is kept)" if history else ""))
            return _clean({"version": mem.version, "row": _rows(found)[0], "history": history,
                           "neighbours": _neighbours(mem, [row_id], k)[0]})

    @app.get("/api/rows/{row_id}/explain")
    def explain(row_id: int, version: str | None = Query(None, max_length=200),
                k: int = Query(10, ge=1, le=MAX_K), voting: str = Query("rank", pattern="^(plurality|distance|softmax|rank)$"),
                who: str = Depends(caller)):
        """What the kNN classifier predicts for the row without it, and each neighbour's share of the decision."""
        with memories.lock:
            mem = memories.at(version)
            if k >= len(mem):
                raise InvalidInputError(f"k={k} needs more than {len(mem)} rows; ask for fewer neighbours")
            table = memories.knn(mem, k, voting).explain(ids=[row_id])
            table = table.drop_columns([c for c in ("query", "memory_version") if c in table.column_names])
            neighbours = _rows(table)
            shares: dict = {}
            for n in neighbours:
                shares[str(n["label"])] = shares.get(str(n["label"]), 0.0) + n["share"]
            return _clean({"version": mem.version, "id": row_id, "k": k, "voting": voting,
                           "predicted": neighbours[0]["predicted"] if neighbours else None,
                           "probabilities": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
                           "neighbours": neighbours})

    @app.get("/api/quality")
    def quality(version: str | None = Query(None, max_length=200), limit: int = Query(20, ge=1, le=MAX_ROWS // 10),
                k: int = Query(5, ge=1, le=50), who: str = Depends(caller)):
        """Label-error candidates: the rows most often a wrong-label neighbour, each with its neighbours."""
        with memories.lock:
            mem = memories.at(version)
            rows = _rows(mem.sql(f"SELECT * EXCLUDE (vector) FROM samples WHERE wrong_count > 0 "
                                 f"ORDER BY wrong_count DESC, id LIMIT {limit}").to_arrow_table())
            estimated = mem.sql("SELECT count(*) FROM samples WHERE wrong_count IS NOT NULL").fetchall()[0][0]
            neighbours = _neighbours(mem, [r["id"] for r in rows], k) if rows else []
            return _clean({"version": mem.version, "estimated": estimated > 0,
                           "rows": [dict(r, neighbours=n) for r, n in zip(rows, neighbours)]})

    @app.get("/api/versions")
    def versions(who: str = Depends(caller)):
        """The timeline of the audit, newest first, with the tags."""
        with memories.lock:
            mem = memories.at(None)
            return _clean({"head": mem.version, "versions": _rows(mem.versions())[::-1],
                           "tags": _rows(mem.tags())})

    @app.get("/api/diff")
    def version_diff(a: str = Query(..., max_length=200), b: str = Query(..., max_length=200),
                     limit: int = Query(100, ge=0, le=MAX_ROWS), who: str = Depends(caller)):
        """Rows added, pruned, forgotten, relabelled and reweighted from version ``a`` to ``b``."""
        with memories.lock:
            mem = memories.at(None)
            return _clean(diff(mem, _ref(a), _ref(b), limit=limit).as_dict())

    @app.post("/api/sql")
    def sql(request: SQLRequest, who: str = Depends(caller)):
        """One read-only SELECT over a version (the sandbox of ``mem.sql``); at most ``limit`` rows back."""
        with memories.lock:
            mem = memories.at(request.version)
            table = mem.sql(request.query).to_arrow_table()
            shown = table.slice(0, request.limit)
            vectors = [f.name for f in shown.schema if pa.types.is_fixed_size_list(f.type)]
            return _clean({"version": mem.version, "columns": shown.column_names, "total": table.num_rows,
                           "truncated": table.num_rows > request.limit,
                           "rows": _rows(shown.drop_columns(vectors)), "omitted_columns": vectors})

    @app.post("/api/forget")
    def forget(request: ForgetRequest, who: str = Depends(caller)):
        """Erase rows for real (``mem.forget``), audited with the token's name. Needs ``--allow-writes``."""
        if not memories.writable:
            raise ReadOnlyError("this server is read-only; start it with `memstore serve --allow-writes` "
                                "to forget rows from the page")
        with memories.lock, audit_user(who):
            report = memories.at(None).forget(np.asarray(request.ids, np.int64), message=request.message)
            return _clean(report.as_dict())

    return app


def _authenticate(tokens: dict[str, str] | None):
    """A FastAPI dependency: the caller's token name (``None`` when the server has no tokens)."""

    def caller(request: Request) -> str | None:
        if not tokens:
            return None
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        for name, secret in tokens.items():
            if given and hmac.compare_digest(given.encode(), secret.encode()):
                return f"token:{name}"
        raise HTTPException(401, "this server needs a token: send `Authorization: Bearer <token>`",
                            headers={"WWW-Authenticate": "Bearer"})

    return caller


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memstore")
    except PackageNotFoundError:
        return "0"


def _ref(version: str) -> int | str:
    return int(version) if version.lstrip("-").isdigit() else version


def _columns(mem) -> list[str]:
    return [c for c in mem.sql("SELECT * FROM samples LIMIT 0").columns if c != "vector"]


def _neighbours(mem, ids: list[int], k: int) -> list[list[dict]]:
    """The k nearest other rows of each of ``ids``: id, label, distance, uri."""
    listed = ", ".join(str(int(i)) for i in ids)
    found = mem.sql(f"SELECT id, vector FROM samples WHERE id IN ({listed}) ORDER BY id").to_arrow_table()
    order = {int(i): n for n, i in enumerate(found["id"].to_pylist())}
    vectors = np.stack([np.asarray(v, np.float32) for v in found["vector"].to_pylist()])
    hits = mem.search(vectors, min(k + 1, len(mem)))
    uris = {}
    if "uri" in _columns(mem):
        listed_hits = ", ".join(str(int(i)) for i in set(hits["id"].to_pylist()))
        uris = dict(mem.sql(f"SELECT id, uri FROM samples WHERE id IN ({listed_hits})").fetchall())
    out = [[] for _ in range(found.num_rows)]
    for query, hit, distance, label in zip(*(hits[c].to_pylist() for c in ("query", "id", "distance", "label"))):
        own = int(found["id"][query].as_py())
        if hit != own and len(out[query]) < k:
            out[query].append({"id": hit, "label": label, "distance": distance, "uri": uris.get(hit)})
    return [out[order[int(i)]] for i in ids]


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _clean(value):
    """JSON-safe: NaN and infinities become null (JSON has neither), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value

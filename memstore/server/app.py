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

import base64
import hmac
import io
import math
import re
import threading
import weakref
from collections import OrderedDict
from pathlib import Path as FilePath
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
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
from memstore.thumbnails import MIME_TYPE, THUMBNAIL_COLUMN, has_thumbnails
from memstore.versioning import audit_user

STATIC = FilePath(__file__).resolve().parent / "static"
#: rows one page of samples (or one SQL result) may return
MAX_ROWS = 1_000
#: rows an SQL console query returns at most; more are cut and flagged
SQL_MAX_ROWS = 10_000
#: bytes of a request body, and characters of a query or a WHERE clause
MAX_BODY_BYTES = 1 << 20
MAX_QUERY_CHARS = 20_000
#: neighbours a request may ask for
MAX_K = 200
#: query vectors (or query rows) one search, classify or explain request may carry
MAX_QUERIES = 1_024
#: pixels of an uploaded image, at most (a small file can decode to a huge image)
MAX_UPLOAD_PIXELS = 40_000_000
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: (query, neighbour) pairs one explain request may return
MAX_EXPLAINED = 20_000
#: pinned versions (and fitted heads) kept open between requests
CACHED_VERSIONS = 8
#: the media type of Arrow's IPC stream, for results a client reads as Arrow tables
ARROW_STREAM = "application/vnd.apache.arrow.stream"

_STATUS = [(VersionNotFoundError, 404), (UnknownIdsError, 404), (ReadOnlyError, 403),
           (QueryLimitError, 413), (SQLError, 400), (InvalidInputError, 400), (MemstoreError, 400)]


class SQLRequest(BaseModel):
    query: str = Field(max_length=MAX_QUERY_CHARS, examples=["SELECT label, count(*) FROM samples GROUP BY label"])
    version: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=MAX_ROWS, ge=1, le=SQL_MAX_ROWS)


#: a row id: memstore's ids are int64, from 0
RowId = Annotated[int, Field(ge=0, le=2**63 - 1)]
RowIdPath = Annotated[int, Path(ge=0, le=2**63 - 1, description="the row's id")]
Version = Annotated[str | None, Field(default=None, max_length=200, description="a version number or tag; "
                                                                               "default the newest")]
Vector = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1, max_length=65_536)]


class SearchRequest(BaseModel):
    """Queries as vectors, or as rows of the memory (``ids``: each searches with its own vector, leaving itself out)."""

    vectors: list[Vector] | None = Field(default=None, min_length=1, max_length=MAX_QUERIES)
    ids: list[RowId] | None = Field(default=None, min_length=1, max_length=MAX_QUERIES)
    k: int = Field(default=10, ge=1, le=MAX_K)
    metric: Literal["cosine", "dot", "l2"] = "cosine"
    version: Version = None


class ClassifyRequest(BaseModel):
    """Queries for the kNN classifier (``memstore.KNNClassifier``) fitted on the version."""

    vectors: list[Vector] | None = Field(default=None, min_length=1, max_length=MAX_QUERIES)
    ids: list[RowId] | None = Field(default=None, min_length=1, max_length=MAX_QUERIES)
    k: int = Field(default=50, ge=1, le=MAX_K)
    voting: Literal["plurality", "distance", "softmax", "rank"] = "rank"
    version: Version = None


class ForgetRequest(BaseModel):
    ids: list[RowId] = Field(min_length=1, max_length=MAX_ROWS)
    message: str | None = Field(default=None, max_length=2_000)


class Memories:
    """The served memory: a handle at the newest version, pinned handles and fitted heads, kept a while."""

    def __init__(self, path: FilePath, *, writable: bool, encoder=None):
        self.path = path
        self.writable = writable
        self._encoder = encoder
        self.head = memstore.open(path, create=False, read_only=not writable)
        self.lock = threading.RLock()  # a Memory handle is used by one request at a time
        self._pinned: OrderedDict = OrderedDict()
        self._heads: OrderedDict = OrderedDict()
        self.overviews: OrderedDict = OrderedDict()  # (head version, version) -> the overview's answer

    def at(self, version: str | None):
        """The memory at ``version`` (a number, a tag name, or None for the newest), refreshed."""
        self.head.refresh()
        if version in (None, "", "head"):
            return self.head
        ref = _ref(version)
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

    def warm_up(self) -> None:
        """What the first search of the newest version needs: its vectors, and the search over them."""
        with self.lock:
            mem = self.head
            if len(mem) > 10:
                mem.searcher()
                self.knn(mem, 10, "rank")  # the page's Explain, with its defaults

    def encoder(self, mem):
        """The encoder that filled the memory, for uploaded images: the one given, or loaded by its name."""
        if self._encoder is None:
            from memstore.encoders.efficientnet import NAME, efficientnet_lite0

            names = [r[0] for r in mem.sql("SELECT DISTINCT encoder FROM samples WHERE encoder IS NOT NULL "
                                           "LIMIT 3").fetchall()] if "encoder" in _columns(mem) else []
            if names != [NAME]:
                raise InvalidInputError(
                    f"this memory's rows were encoded by {names or 'no recorded encoder'}; the server loads "
                    f"only {NAME!r} by name. Start it with create_app(path, encoder=...) to encode uploads")
            try:
                self._encoder = efficientnet_lite0()
            except (ImportError, OSError, RuntimeError) as exc:
                raise InvalidInputError(f"the encoder {NAME!r} cannot be loaded here ({exc}); install "
                                        "memstore[encoders], or start the server with an encoder") from None
        return self._encoder


def _recent(cache: OrderedDict, key):
    cache.move_to_end(key)
    while len(cache) > CACHED_VERSIONS:
        cache.popitem(last=False)
    return cache[key]


def create_app(path, *, tokens: dict[str, str] | None = None, allow_writes: bool = False,
               encoder=None, warm_up: bool = False) -> FastAPI:
    """The FastAPI app serving the memory at ``path``.

    Parameters
    ----------
    path : the memory's directory.
    tokens : name -> secret. When given, every request must carry one secret,
        as ``Authorization: Bearer <secret>`` (or ``?token=`` for the page's links),
        and writes name the token in the audit row.
    allow_writes : serve ``POST /api/forget``; without it the server refuses writes.
    encoder : the ``memstore.encoders.Encoder`` that encodes uploaded images
        (``POST /api/explain-image``); default: the memory's recorded encoder,
        if it is one memstore loads by name (EfficientNet-Lite0).
    warm_up : read the newest version's vectors and build its search in a
        thread at start (``memstore serve`` does), so that the first row a user
        opens does not wait for them (7 s at a million rows of 128-d).

    Examples
    --------
    >>> import numpy as np, tempfile, memstore
    >>> from fastapi.testclient import TestClient
    >>> path = tempfile.mkdtemp() + "/s.mem"
    >>> _ = memstore.open(path).add(np.eye(3, dtype="f4"), ["a", "b", "b"])
    >>> TestClient(create_app(path)).get("/api/overview").json()["rows"]
    3
    """
    memories = Memories(FilePath(path), writable=allow_writes, encoder=encoder)
    if warm_up:
        threading.Thread(target=memories.warm_up, name="memstore-warm-up", daemon=True).start()
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
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            # a chunked body has no length to check before it is read
            return JSONResponse({"error": "LengthRequired", "detail": "send a Content-Length with the body"},
                                status_code=411)
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
            key = (memories.head.version, mem.version)  # a version never changes; a forget makes a new head
            if key not in memories.overviews:
                info = mem.info()
                labels = mem.sql("SELECT label, count(*) AS rows FROM samples GROUP BY label "
                                 "ORDER BY rows DESC, label")
                info.update(labels=_rows(labels.to_arrow_table()), index=mem.index_info(),
                            writable=memories.writable, columns=_columns(mem), thumbnails=_has_thumbnails(mem))
                memories.overviews[key] = _clean(info)
            return _recent(memories.overviews, key)

    @app.get("/api/samples")
    def samples(version: str | None = Query(None, max_length=200),
                where: str | None = Query(None, max_length=MAX_QUERY_CHARS,
                                          description="an SQL condition on samples' columns"),
                order: str = Query("id", max_length=200), descending: bool = False,
                offset: int = Query(0, ge=0, le=10**12), limit: int = Query(100, ge=1, le=MAX_ROWS),
                thumbnails: bool = Query(False, description="each row's thumbnail inline, as a data: URI"),
                who: str = Depends(caller)):
        """A page of rows (without vectors), filtered by ``where`` and sorted by ``order``."""
        with memories.lock:
            mem = memories.at(version)
            columns = _columns(mem)
            if order not in columns:
                raise InvalidInputError(f"cannot sort by {order!r}: the columns are {columns}")
            condition = f"WHERE ({where})" if where and where.strip() else ""
            total = mem.sql(f"SELECT count(*) FROM samples {condition}").fetchall()[0][0]
            # the page's ids first, then its rows by id: the sort reads only the columns it needs
            # (at a million rows, 8 ms instead of 340 ms for every column)
            page = mem.sql(f'SELECT id FROM samples {condition} ORDER BY "{order}" '
                           f'{"DESC" if descending else "ASC"}, id LIMIT {limit} OFFSET {offset}'
                           ).limit(limit).fetchall()  # a comment in ``where`` could cut the LIMIT: still bounded
            rows = _rows(mem.take([i for (i,) in page], columns))
            if thumbnails:  # by id, after the page: the sort never carries the images
                rows = _with_thumbnails(mem, rows)
            return _clean({"version": mem.version, "total": total, "offset": offset, "rows": rows})

    @app.get("/api/rows/{row_id}")
    def row(row_id: RowIdPath, version: str | None = Query(None, max_length=200), k: int = Query(10, ge=1, le=MAX_K),
            who: str = Depends(caller)):
        """A row: its provenance, its label and weight across versions, and its nearest neighbours."""
        with memories.lock:
            mem = memories.at(version)
            history = _rows(mem.sql(f"SELECT label, weight, wrong_count, valid_from, valid_to FROM history "
                                    f"WHERE id = {row_id} ORDER BY valid_from").to_arrow_table())
            pictured = _has_thumbnails(mem)
            try:  # one read by id for the row and its thumbnail: each costs ~10 ms at a million rows
                found = _rows(mem.take([row_id], _columns(mem) + ([THUMBNAIL_COLUMN] if pictured else [])))[0]
            except UnknownIdsError:
                raise UnknownIdsError(f"row {row_id} is not in version {mem.version}"
                                      + (" (it was pruned; its history is kept)" if history else "")) from None
            blob = found.pop(THUMBNAIL_COLUMN, None) if pictured else None
            return _clean({"version": mem.version, "row": found, "history": history,
                           "thumbnail": None if blob is None else _data_uri(blob),
                           "neighbours": _neighbours(mem, [row_id], k)[0]})

    @app.get("/api/rows/{row_id}/thumbnail", response_class=Response,
             responses={200: {"content": {MIME_TYPE: {}}}, 404: {"description": "no such row, or no thumbnail"}})
    def thumbnail(row_id: RowIdPath, version: str | None = Query(None, max_length=200), who: str = Depends(caller)):
        """The row's thumbnail (``memstore.thumbnails``), as the image file itself."""
        with memories.lock:
            mem = memories.at(version)
            blob = _thumbnail_bytes(mem, [row_id]).get(row_id)
            if blob is None:
                raise UnknownIdsError(f"row {row_id} of version {mem.version} has no thumbnail"
                                      + ("" if _has_thumbnails(mem) else ": the memory keeps none"))
            # no-store: a forgotten row's thumbnail must not outlive it in a browser's cache
            return Response(blob, media_type=MIME_TYPE, headers={"Cache-Control": "no-store"})

    @app.get("/api/rows/{row_id}/explain")
    def explain(row_id: RowIdPath, version: str | None = Query(None, max_length=200),
                k: int = Query(10, ge=1, le=MAX_K), voting: str = Query("rank", pattern="^(plurality|distance|softmax|rank)$"),
                who: str = Depends(caller)):
        """What the kNN classifier predicts for the row without it, and each neighbour's share of the decision."""
        with memories.lock:
            mem = memories.at(version)
            table = memories.knn(mem, _check_k(k, mem, [row_id]), voting).explain(ids=[row_id])
            return _clean({"version": mem.version, "id": row_id, "k": k, "voting": voting,
                           **_decisions(mem, table)[0]})

    @app.post("/api/explain-image")
    async def explain_image(request: Request, version: str | None = Query(None, max_length=200),
                            k: int = Query(10, ge=1, le=MAX_K),
                            voting: str = Query("rank", pattern="^(plurality|distance|softmax|rank)$"),
                            who: str = Depends(caller)):
        """Query by example: the body is an image file (PNG, JPEG, WebP...), encoded by the memory's encoder;
        what the kNN classifier predicts for it and each neighbour's share of the decision."""
        body = await request.body()

        def explained():  # decoding, encoding and search: in the thread pool, never on the event loop
            image = _uploaded_image(body)
            with memories.lock:
                mem = memories.at(version)
                vector = memories.encoder(mem).encode([image])
                table = memories.knn(mem, _check_k(k, mem, None), voting).explain(vector)
                return _clean({"version": mem.version, "k": k, "voting": voting, **_decisions(mem, table)[0]})

        return await run_in_threadpool(explained)

    @app.post("/api/search")
    def search(request: SearchRequest, who: str = Depends(caller)):
        """The k nearest rows of each query: ids, distances and labels, (n_queries, k) each, nearest first."""
        with memories.lock:
            mem = memories.at(request.version)
            queries, exclude = _queries(mem, request.vectors, request.ids)
            searcher = mem.searcher(request.metric, "auto", k=request.k)
            dist, pos = searcher.search(queries, request.k, exclude=exclude)
            samples = mem.samples
            labels = samples.labels.take(pa.array(pos.ravel())).to_pylist()
            k = pos.shape[1]
            return _clean({"version": mem.version, "ids": samples.ids[pos].tolist(), "distances": dist.tolist(),
                           "labels": [labels[i:i + k] for i in range(0, len(labels), k)]})

    @app.post("/api/classify")
    def classify(request: ClassifyRequest, who: str = Depends(caller)):
        """The kNN classifier's prediction and class probabilities for each query (rows: leaving themselves out)."""
        with memories.lock:
            mem = memories.at(request.version)
            head = memories.knn(mem, _check_k(request.k, mem, request.ids), request.voting)
            queries = _head_queries(mem, request)
            dist, pos = head._neighbors(queries.get("X"), None, queries.get("ids"))  # one search for both
            proba, winner = head._decide(head._votes(dist, pos), pos)
            return _clean({"version": mem.version, "classes": head.classes_.tolist(),
                           "predicted": head.classes_[winner].tolist(), "probabilities": proba.tolist()})

    @app.post("/api/explain")
    def explain_queries(request: ClassifyRequest, who: str = Depends(caller)):
        """For each query, the kNN decision and every neighbour's share of it (``KNNClassifier.explain``)."""
        with memories.lock:
            mem = memories.at(request.version)
            queries = _head_queries(mem, request)  # refuses neither or both of vectors and ids
            n = len(request.vectors or request.ids)
            if n * request.k > MAX_EXPLAINED:
                raise QueryLimitError(f"{n} queries x k={request.k} is {n * request.k:,} neighbours; "
                                      f"one request explains at most {MAX_EXPLAINED:,}: send fewer queries")
            head = memories.knn(mem, _check_k(request.k, mem, request.ids), request.voting)
            table = head.explain(**queries)
            return _clean({"version": mem.version, "k": request.k, "voting": request.voting,
                           "queries": _decisions(mem, table)})

    @app.get("/api/rows.arrow", response_class=Response, responses={200: {"content": {ARROW_STREAM: {}}}})
    def rows_arrow(version: str | None = Query(None, max_length=200), who: str = Depends(caller)):
        """id, label and weight of every row of the version, ascending id, as an Arrow IPC stream:
        what a kNN head fitted through ``memstore.connect`` keeps."""
        with memories.lock:
            mem = memories.at(version)
            samples = mem.samples
            table = pa.table({"id": samples.ids, "label": samples.labels, "weight": samples.weights})
            return Response(_arrow_bytes(table, {"version": str(mem.version)}), media_type=ARROW_STREAM)

    @app.get("/api/quality")
    def quality(version: str | None = Query(None, max_length=200), limit: int = Query(20, ge=1, le=MAX_ROWS // 10),
                k: int = Query(5, ge=1, le=50), who: str = Depends(caller)):
        """Label-error candidates: the rows most often a wrong-label neighbour, each with its neighbours."""
        with memories.lock:
            mem = memories.at(version)
            rows = _rows(mem.sql(f"SELECT {_select(_columns(mem))} FROM samples WHERE wrong_count > 0 "
                                 f"ORDER BY wrong_count DESC, id LIMIT {limit}").to_arrow_table())
            rows = _with_thumbnails(mem, rows)
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
            return _clean(diff(memories.at(None), memories.at(a), memories.at(b), limit=limit).as_dict())

    @app.post("/api/sql")
    def sql(request: SQLRequest, who: str = Depends(caller)):
        """One read-only SELECT over a version (the sandbox of ``mem.sql``); at most ``limit`` rows back."""
        with memories.lock:
            mem = memories.at(request.version)
            table = mem.sql(request.query).to_arrow_table()
            shown = table.slice(0, request.limit)
            vectors = [f.name for f in shown.schema if pa.types.is_fixed_size_list(f.type) or _is_binary(f.type)]
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
    return int(version) if re.fullmatch(r"-?[0-9]+", version) else version  # not isdigit: "²" is a digit


def _columns(mem) -> list[str]:
    """The columns of samples a page shows: all but the vector and binary ones (thumbnails)."""
    schema = _schema(mem)
    return [f.name for f in schema if f.name != "vector" and not _is_binary(f.type)]


def _is_binary(arrow_type) -> bool:
    return pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or \
        pa.types.is_fixed_size_binary(arrow_type)


def _select(columns: list[str]) -> str:
    return ", ".join('"' + c.replace('"', '""') + '"' for c in columns)


def _has_thumbnails(mem) -> bool:
    return has_thumbnails(_schema(mem))


#: handle -> (its version, the schema of its samples): asked several times a request, read once
_SCHEMAS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _schema(mem) -> pa.Schema:
    """The columns of ``samples`` at ``mem``'s version; a handle that moves on (refresh) reads them again."""
    kept = _SCHEMAS.get(mem)
    if kept is None or kept[0] != mem.version:
        kept = _SCHEMAS[mem] = (mem.version, mem.sql("SELECT * FROM samples LIMIT 0").to_arrow_table().schema)
    return kept[1]


def _thumbnail_bytes(mem, ids) -> dict:
    """id -> thumbnail bytes, for those of ``ids`` (rows of the version) that have one."""
    ids = sorted({int(i) for i in ids})
    if not ids or not _has_thumbnails(mem):
        return {}
    return _blobs(mem.take(ids, [THUMBNAIL_COLUMN]))


def _blobs(taken: pa.Table) -> dict:
    """id -> thumbnail bytes of the rows of a ``Memory.take`` that have one."""
    return {i: b for i, b in zip(taken["id"].to_pylist(), taken[THUMBNAIL_COLUMN].to_pylist()) if b is not None}


def _thumbnails(mem, ids) -> dict:
    """id -> the thumbnail as a ``data:`` URI, which a page shows without another request."""
    return {i: _data_uri(b) for i, b in _thumbnail_bytes(mem, ids).items()}


def _with_thumbnails(mem, rows: list[dict]) -> list[dict]:
    """``rows`` with each one's thumbnail as a data URI; as they are in a memory that keeps none
    (where a column named ``thumbnail``, if any, is the user's own)."""
    if not _has_thumbnails(mem):
        return rows
    pictures = _thumbnails(mem, [r["id"] for r in rows])
    return [dict(r, thumbnail=pictures.get(r["id"])) for r in rows]


def _data_uri(blob: bytes) -> str:
    return f"data:{MIME_TYPE};base64,{base64.b64encode(blob).decode()}"


def _uploaded_image(body: bytes):
    """The request body as a PIL image, or a clear error."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        raise InvalidInputError("send an image file as the request body (PNG, JPEG, WebP, ...)")
    try:
        # the formats an upload may be: no EPS (Ghostscript), no exotic decoders
        image = Image.open(io.BytesIO(body), formats=UPLOAD_FORMATS)
        if image.size[0] * image.size[1] > MAX_UPLOAD_PIXELS:
            raise InvalidInputError(f"the image is {image.size[0]} x {image.size[1]} pixels; send one of at "
                                    f"most {MAX_UPLOAD_PIXELS:,} pixels")
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"the request body is not an image this server can read ({exc})") from None


def _queries(mem, vectors, ids):
    """(queries, exclude) for a searcher: vectors as given, or rows' own vectors each leaving itself out."""
    if (vectors is None) == (ids is None):
        raise InvalidInputError("send either vectors (query vectors) or ids (rows of the memory as queries)")
    if ids is not None:
        samples = mem.samples
        pos, known = samples.positions(ids)
        if not known.all():
            missing = np.asarray(ids)[~known][:10].tolist()
            raise UnknownIdsError(f"ids {missing} are not rows of version {mem.version}; send ids it holds")
        return samples.vectors[pos], pos
    dims = {len(v) for v in vectors}
    if dims != {mem.dim}:
        raise InvalidInputError(f"query vectors must have {mem.dim} components, as the memory's rows; "
                                f"got lengths {sorted(dims)[:5]}")
    return np.asarray(vectors, np.float32), None


def _check_k(k: int, mem, ids) -> int:
    if k > len(mem) - (ids is not None):
        raise InvalidInputError(f"k={k} needs more rows than the {len(mem)} of version {mem.version}; "
                                "ask for fewer neighbours")
    return k


def _head_queries(mem, request) -> dict:
    """The head's keyword arguments for the request's queries: X (vectors) or ids (leaving themselves out)."""
    queries, exclude = _queries(mem, request.vectors, request.ids)
    return {"ids": request.ids} if exclude is not None else {"X": queries}


def _decisions(mem, table: pa.Table) -> list[dict]:
    """``KNNClassifier.explain``'s table as one decision per query: predicted, probabilities, neighbours."""
    pictured = _has_thumbnails(mem)
    pictures = _thumbnails(mem, table["id"].to_pylist()) if pictured else {}
    dropped = ("memory_version",) + ((THUMBNAIL_COLUMN,) if pictured else ())  # the bytes: sent as data URIs
    out = {}
    for n in _rows(table.drop_columns([c for c in dropped if c in table.column_names])):
        query = out.setdefault(n.pop("query"), {"predicted": n["predicted"], "probabilities": {}, "neighbours": []})
        label = str(n["label"])
        query["probabilities"][label] = query["probabilities"].get(label, 0.0) + n["share"]
        query["neighbours"].append(dict(n, thumbnail=pictures.get(n["id"])) if pictured else n)
    for query in out.values():
        query["probabilities"] = dict(sorted(query["probabilities"].items(), key=lambda kv: -kv[1]))
    return [out[q] for q in sorted(out)]


def _arrow_bytes(table: pa.Table, metadata: dict) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema.with_metadata(metadata)) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _neighbours(mem, ids: list[int], k: int) -> list[list[dict]]:
    """The k nearest other rows of each of ``ids``: id, label, distance, uri, thumbnail."""
    queries = np.asarray(sorted({int(i) for i in ids}), np.int64)
    samples = mem.samples  # in RAM for the search anyway: the queries' vectors are there
    pos, known = samples.positions(queries)
    if not known.all():
        raise UnknownIdsError(f"ids {queries[~known][:10].tolist()} are not rows of version {mem.version}")
    order = {int(i): n for n, i in enumerate(queries)}
    hits = mem.search(samples.vectors[pos], min(k + 1, len(mem)))
    columns = [c for c in ("uri",) if c in _columns(mem)] + ([THUMBNAIL_COLUMN] if _has_thumbnails(mem) else [])
    near = mem.take(sorted(set(hits["id"].to_pylist())), columns) if columns else None  # one read by id
    uris = dict(zip(near["id"].to_pylist(), near["uri"].to_pylist())) if "uri" in columns else {}
    pictures = {i: _data_uri(b) for i, b in _blobs(near).items()} if THUMBNAIL_COLUMN in columns else {}
    out = [[] for _ in range(len(queries))]
    for query, hit, distance, label in zip(*(hits[c].to_pylist() for c in ("query", "id", "distance", "label"))):
        own = int(queries[query])
        if hit != own and len(out[query]) < k:
            out[query].append({"id": hit, "label": label, "distance": distance, "uri": uris.get(hit),
                               "thumbnail": pictures.get(hit)})
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
    if isinstance(value, (bytes, bytearray, memoryview)):  # a BLOB, wherever it sits: not text
        return f"<{len(value)} bytes>"
    return value

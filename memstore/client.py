"""``memstore.connect``: a memory served by ``memstore serve``, read from another process or machine.

The client speaks the server's JSON API (its OpenAPI schema is at ``/docs``)
and reads row tables as Arrow. It offers the reads a model needs: ``sql``,
``search``, ``classify``, ``explain``, ``versions``; and a kNN head fits on
it as on a local memory::

    remote = memstore.connect("http://10.0.0.5:8765", token=os.environ["MEMSTORE_TOKEN"])
    head = memstore.KNNClassifier(k=50).fit(remote.at(12))
    head.predict(queries)            # the searches run on the server

A head fitted on a client keeps the rows' ids, labels and weights (about 20
bytes a row) and asks the server for neighbours, so the vectors never cross
the network; it is pinned to the version it was fitted on (``at``; the
newest version when fitted on an unpinned client). Its ``explain`` table has
no provenance columns: join it with ``remote.sql(...)`` on ``id``.

Errors come back as memstore's own: a missing version raises
``VersionNotFoundError``, bad SQL ``SQLError``, and so on, with the server's
message.

Examples
--------
>>> import numpy as np, tempfile, threading, time, uvicorn, memstore
>>> from memstore.server import create_app
>>> path = tempfile.mkdtemp() + "/c.mem"
>>> _ = memstore.open(path).add(np.eye(4, dtype="f4"), ["a", "b", "b", "c"])
>>> server = uvicorn.Server(uvicorn.Config(create_app(path), port=0, log_level="error"))
>>> thread = threading.Thread(target=server.run, daemon=True); thread.start()
>>> while not server.started: time.sleep(0.01)
>>> port = server.servers[0].sockets[0].getsockname()[1]
>>> remote = memstore.connect(f"http://127.0.0.1:{port}")
>>> remote.sql("SELECT label, count(*) AS n FROM samples GROUP BY label ORDER BY label").to_pylist()
[{'label': 'a', 'n': 1}, {'label': 'b', 'n': 2}, {'label': 'c', 'n': 1}]
>>> remote.search(np.eye(4, dtype="f4")[1:2], k=1)["id"].to_pylist()
[1]
>>> server.should_exit = True; thread.join()
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from . import errors

#: rows of queries a request carries (the server's limit)
QUERY_BATCH = 1_024
#: floats a request of vectors carries at most, to stay under the server's 1 MB body
FLOATS_PER_REQUEST = 40_000
#: (query, neighbour) pairs one explain request returns at most (the server's MAX_EXPLAINED)
EXPLAINED_PER_REQUEST = 20_000


def connect(url: str, token: str | None = None, *, timeout: float = 60.0) -> "RemoteMemory":
    """A client of the memory served at ``url`` (``memstore serve``), at its newest version.

    Parameters
    ----------
    url : ``http://host:port`` of the server.
    token : the server's token, if it has one (sent as ``Authorization: Bearer``).
    timeout : seconds to wait for one answer.
    """
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    remote = RemoteMemory(httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout), None)
    remote.info()  # fails now, with the server's reason, if the url or the token is wrong
    return remote


class RemoteMemory:
    """A served memory at one version (``version=None``: the newest, at each call)."""

    def __init__(self, http, version: int | str | None):
        self._http = http
        self._version = version

    def __repr__(self) -> str:
        return f"RemoteMemory({str(self._http.base_url)!r}, version={self._version!r})"

    # -- reads ------------------------------------------------------------------------
    def at(self, version: int | str) -> "RemoteMemory":
        """The same memory pinned at ``version`` (a number or a tag), as ``Memory.at``."""
        remote = RemoteMemory(self._http, version)
        remote.info()
        return remote

    def info(self) -> dict:
        """Rows, dim, version, versions, tags, labels and disk use of the version."""
        return self._get("/api/overview", version=self._version)

    @property
    def version(self) -> int:
        return self.info()["version"] if self._version is None or isinstance(self._version, str) \
            else int(self._version)

    def __len__(self) -> int:
        return int(self.info()["rows"])

    def sql(self, query: str, *, limit: int = 10_000) -> pa.Table:
        """One read-only SELECT over the version (the server's sandbox): at most ``limit`` rows, no vectors."""
        answer = self._post("/api/sql", {"query": query, "version": _ref(self._version), "limit": limit})
        return pa.Table.from_pylist(answer["rows"]) if answer["rows"] else \
            pa.table({c: pa.nulls(0) for c in answer["columns"] if c not in answer["omitted_columns"]})

    def versions(self) -> pa.Table:
        """The audit timeline, oldest first, as ``Memory.versions``."""
        return pa.Table.from_pylist(self._get("/api/versions")["versions"][::-1])

    def search(self, queries, k: int = 10, *, metric: str = "cosine") -> pa.Table:
        """The k nearest rows of each query, searched on the server: (query, rank, id, distance, label)."""
        ids, dist, labels = self._search({"vectors": _vectors(queries)}, k, metric)
        nq, k = ids.shape
        return pa.table({"query": np.repeat(np.arange(nq), k), "rank": np.tile(np.arange(k), nq),
                         "id": ids.ravel(), "distance": dist.ravel(), "label": labels})

    def classify(self, queries, k: int = 50, *, voting: str = "rank") -> tuple[np.ndarray, np.ndarray, list]:
        """The server's kNN classifier on ``queries``: (predicted labels, probabilities (n, classes), classes)."""
        predicted, proba, classes = [], [], None
        for chunk in _chunks(_vectors(queries)):
            answer = self._post("/api/classify", {"vectors": chunk, "k": k, "voting": voting,
                                                  "version": _ref(self._version)})
            classes = answer["classes"]
            predicted += answer["predicted"]
            proba += answer["probabilities"]
        return np.asarray(predicted), np.asarray(proba, np.float64), classes

    def explain(self, queries=None, *, ids=None, k: int = 50, voting: str = "rank") -> list[dict]:
        """Each query's decision: predicted, probabilities, and every neighbour with its share of the vote."""
        if (queries is None) == (ids is None):
            raise errors.InvalidInputError("explain takes query vectors or ids of rows, one of the two")
        per = max(1, min(QUERY_BATCH, EXPLAINED_PER_REQUEST // k))  # the server's bound on queries x k
        payloads = [{"vectors": c} for c in _chunks(_vectors(queries), per)] if queries is not None else \
            [{"ids": np.asarray(ids, np.int64)[i:i + per].tolist()} for i in range(0, len(ids), per)]
        out = []
        for payload in payloads:
            out += self._post("/api/explain", {**payload, "k": k, "voting": voting,
                                               "version": _ref(self._version)})["queries"]
        return out

    # -- what a head fitted on it reads ----------------------------------------------
    @property
    def samples(self) -> "RemoteSamples":
        """ids, labels and weights of the version's rows (ascending id); vectors stay on the server."""
        answer = self._http.get("/api/rows.arrow", params=_params(version=self._version))
        _raise_for(answer)
        table = pa.ipc.open_stream(io.BytesIO(answer.content)).read_all()
        version = int(table.schema.metadata[b"version"])
        dim = int(self.info()["dim"])
        return RemoteSamples(table["id"].to_numpy(), table["label"].combine_chunks(),
                             table["weight"].to_numpy().astype(np.float32), RemoteVectors(len(table), dim),
                             version)

    @property
    def taxonomy(self) -> pa.Table | None:
        table = self.sql("SELECT node, parent, name, level FROM taxonomy")
        return table if table.num_rows else None

    def searcher(self, metric: str = "cosine", index: str = "auto", *, version: int, ids: np.ndarray, **_):
        """The server's search over ``version``, with results as positions among ``ids`` (the head's rows)."""
        return RemoteSearcher(self, metric, version, ids)

    # -- plumbing ---------------------------------------------------------------------
    def _search(self, payload: dict, k: int, metric: str, version=None):
        (key, items), = payload.items()  # one kind of query: vectors, or ids
        ids, dist, labels = [], [], []
        for chunk in (_chunks(items) if key == "vectors" else
                      [items[i:i + QUERY_BATCH] for i in range(0, len(items), QUERY_BATCH)]):
            answer = self._post("/api/search", {key: chunk, "k": k, "metric": metric,
                                                "version": _ref(self._version if version is None else version)})
            ids += answer["ids"]
            dist += answer["distances"]
            labels += [label for row in answer["labels"] for label in row]
        return np.asarray(ids, np.int64), np.asarray(dist, np.float32), labels

    def _get(self, path: str, **params) -> dict:
        answer = self._http.get(path, params=_params(**params))
        _raise_for(answer)
        return answer.json()

    def _post(self, path: str, body: dict) -> dict:
        answer = self._http.post(path, json=body)
        _raise_for(answer)
        return answer.json()


class RemoteSamples:
    """As ``memstore.snapshot.Samples`` for a head: ids, labels, weights; vectors a stand-in."""

    def __init__(self, ids, labels, weights, vectors, version: int):
        self.ids, self.labels, self.weights, self.vectors, self.version = ids, labels, weights, vectors, version
        self.offsets = None

    def __len__(self) -> int:
        return len(self.ids)


class RemoteVectors:
    """The shape of the served vectors; indexing gives the rows, which the server searches with."""

    def __init__(self, n: int, dim: int):
        self.shape = (n, dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, positions) -> "RemoteRows":
        return RemoteRows(np.arange(self.shape[0])[positions])


class RemoteRows:
    """Rows of the served memory, by position, used as queries that leave themselves out."""

    def __init__(self, positions: np.ndarray):
        self.positions = np.atleast_1d(positions)


class RemoteSearcher:
    """``searcher.search(queries, k, exclude=None) -> (distances, positions)``, run by the server."""

    def __init__(self, remote: RemoteMemory, metric: str, version: int, ids: np.ndarray):
        self.remote, self.metric, self.version, self.ids = remote, metric, version, ids

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(queries, RemoteVectors):  # every row, each leaving itself out
            queries = queries[:]
        if isinstance(queries, RemoteRows):
            if exclude is None or not np.array_equal(np.asarray(exclude), queries.positions):
                raise errors.InvalidInputError("rows of a remote memory are searched leaving themselves out")
            payload = {"ids": self.ids[queries.positions].tolist()}
        elif exclude is not None:
            raise errors.InvalidInputError("a remote search leaves out only the query rows themselves")
        else:
            payload = {"vectors": _vectors(queries)}
        found, dist, _ = self.remote._search(payload, k, self.metric, version=self.version)
        positions = np.searchsorted(self.ids, found)
        if found.size and not np.array_equal(self.ids[np.minimum(positions, len(self.ids) - 1)], found):
            raise errors.StaleVersionError(f"the server answered with rows the head was not fitted on (version "
                                        f"{self.version}); fit the head again")
        return dist, positions


def _vectors(queries) -> list:
    q = np.asarray(queries, np.float32)
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or not q.size:
        raise errors.InvalidInputError(f"queries must be a 2-d array (n_queries, dim), got shape {q.shape}")
    if not np.isfinite(q).all():
        raise errors.InvalidInputError("queries hold NaN or infinite values; fix or drop those rows")
    return q.tolist()


def _chunks(vectors: list, most: int = QUERY_BATCH) -> list:
    per = max(1, min(most, FLOATS_PER_REQUEST // max(1, len(vectors[0]))))
    return [vectors[i:i + per] for i in range(0, len(vectors), per)]


def _ref(version):
    return None if version is None else str(version)


def _params(**params) -> dict:
    return {k: str(v) for k, v in params.items() if v is not None}


#: the server's error names, back as memstore's exceptions
_ERRORS = {name: getattr(errors, name) for name in dir(errors)
           if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), errors.MemstoreError)}


def _raise_for(answer) -> None:
    if answer.is_success:
        return
    try:
        body = answer.json()
    except ValueError:
        body = {}
    detail = body.get("detail", answer.text)
    kind = _ERRORS.get(body.get("error"), errors.InvalidInputError if answer.status_code == 422
                       else errors.MemstoreError)
    if answer.status_code == 401:
        raise PermissionError(f"{answer.request.url.host}: {detail}")
    raise kind(detail if isinstance(detail, str) else f"the server refused the request: {detail}")


__all__ = ["RemoteMemory", "connect"]

"""The ``memstore`` command: each sub-command is one API call.

The memory's path comes first, as in ``memstore sql fashion.mem "SELECT ..."``.
Results print as a table, or as JSON / CSV with ``--format``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

# Light on purpose: `memstore` loads its memory (lancedb, duckdb, pyarrow) on first use, and numpy
# and pyarrow are imported inside the commands, so `memstore --help` takes no second to print.
import memstore

from .errors import MemstoreError
from .sql_limits import SQLLimits

if TYPE_CHECKING:  # the annotations' names, for type checkers only
    import numpy as np
    import pyarrow as pa

FORMATS = click.Choice(["table", "json", "csv"])
MAX_CELL = 48


def _open(path: str, *, create: bool = False) -> memstore.Memory:
    """The memory at PATH; a new one only for ``memstore init`` (create=True).

    The path is kept in the click context, for error messages that name no file.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["memstore.path"] = path
    return memstore.open(path, create=create)


def _is_number(text: str) -> bool:
    """ASCII digits only: ``'²'.isdigit()`` is True, but ``int('²')`` fails."""
    return text.isascii() and text.isdigit()


def _ref(ref: str) -> int | str:
    """A version number (ASCII digits) or else a tag name."""
    return int(ref) if _is_number(ref) else ref


def _emit(table: pa.Table, fmt: str) -> None:
    rows = table.to_pylist()
    if fmt == "json":
        click.echo(json.dumps(rows, default=str, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        writer.writerows([[r[c] for c in table.column_names] for r in rows])
    else:
        click.echo(_text_table(table.column_names, rows))


def _cell(value) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _text_table(names: list[str], rows: list[dict]) -> str:
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(n.ljust(w) for n, w in zip(names, widths)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _table(columns: dict) -> pa.Table:
    import pyarrow as pa

    return pa.table(columns)


def _result(res: memstore.WriteResult, fmt: str) -> None:
    _emit(_table({"version": [res.version], "rows": [res.rows]}), fmt)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _os_error(exc: OSError) -> str:
    """An OSError's message with the path(s) it concerns."""
    text = str(exc)
    for name in (exc.filename, exc.filename2):
        if name is not None and str(name) not in text:
            text += f": {name}"
    return text


class _Group(click.Group):
    """Turns memstore's errors and OSErrors (disk full, permission) into one line and exit code 1.

    Click's own usage errors (exit code 2) pass through unchanged.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MemstoreError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(1)
        except OSError as exc:
            message = _os_error(exc)
            if exc.filename is None and ctx.meta.get("memstore.path"):
                message += f" (memory {ctx.meta['memstore.path']})"
            click.echo(f"error: {_one_line(message)}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(memstore.__version__, prog_name="memstore")
def main():
    """memstore: a model's explicit memory in an embedded database."""


@main.command()
@click.argument("path")
def init(path):
    """Create a memory at PATH (a new or empty directory); open it if it exists."""
    mem = _open(path, create=True)
    click.echo(f"memory {mem.path} at version {mem.version}")


@main.command()
@click.argument("path")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False),
              help=".npy or text file (one label per line) of labels, for a .npy SOURCE.")
@click.option("--vector-column", default="vector", show_default=True,
              help="Column of SOURCE (parquet/arrow) holding the vectors.")
@click.option("--label-column", default="label", show_default=True,
              help="Column of SOURCE (parquet/arrow) holding the labels.")
@click.option("--dataset", help="Provenance: dataset name for every row.")
@click.option("--split", help="Provenance: split name for every row.")
@click.option("-m", "--message", help="Why these rows were added (kept in the audit).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def add(path, source, labels_file, vector_column, label_column, dataset, split, message, fmt):
    """Add the vectors of SOURCE (.npy, .parquet, .arrow/.feather) to the memory at PATH.

    A parquet/arrow SOURCE holds a vector column and a label column, and may hold
    a weight column (quality weights); its other columns become provenance (uri,
    split, ... or your own names).
    """
    import numpy as np

    provenance = {k: v for k, v in (("dataset", dataset), ("split", split)) if v is not None}
    weights = None
    src = Path(source)
    if src.suffix == ".npy":
        if not labels_file:
            raise click.UsageError("a .npy SOURCE needs --labels FILE (.npy or one label per line)")
        vectors = np.load(src, mmap_mode="r")
        labels = (np.load(labels_file, allow_pickle=False) if labels_file.endswith(".npy")
                  else Path(labels_file).read_text().splitlines())
        table = None
    else:
        table = _read_table(src)
        for col, opt in ((vector_column, "--vector-column"), (label_column, "--label-column")):
            if col not in table.column_names:
                raise click.UsageError(f"{source} has no column {col!r} (columns: {table.column_names}); "
                                       f"name it with {opt}")
        vectors, labels = table[vector_column], table[label_column]
        if "weight" in table.column_names and "weight" not in (vector_column, label_column):
            weights = table["weight"]
        for name in table.column_names:
            if name not in (vector_column, label_column, "weight"):
                provenance.setdefault(name, table[name])
    mem = _open(path)
    res = mem.add(vectors, labels, provenance=provenance, weights=weights,
                  message=message or f"add {src.name}", progress=None)
    _result(res, fmt)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _image_source(source: str, limit: int | None):
    """(images, labels): a dataset name (fashion-mnist:train, digits:test) or a folder.

    A folder is read in the ImageFolder layout: one sub-folder per class, named
    by the class, holding that class's image files.
    """
    import numpy as np

    from . import data

    name, _, split = source.partition(":")
    if name in ("fashion-mnist", "digits") and not Path(source).exists():
        dataset = data.load_fashion_mnist(split or "train") if name == "fashion-mnist" \
            else data.load_digits(split or "all")
        return (dataset if limit is None else dataset.subset(np.arange(min(limit, len(dataset))))), None
    root = Path(source)
    if not root.is_dir():
        raise click.UsageError(f"{source} is neither a folder of class sub-folders nor a dataset name "
                               "(fashion-mnist:train, fashion-mnist:test, digits:train, digits:test)")
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise click.UsageError(f"{source} holds no images in class sub-folders ({source}/CLASS/IMAGE.png)")
    files = files[:limit]
    return [str(p) for p in files], [p.parent.name for p in files]


def _read_table(src: Path) -> pa.Table:
    if src.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(src)
    if src.suffix in (".arrow", ".feather", ".ipc"):
        import pyarrow.feather as feather

        return feather.read_table(src)
    raise click.UsageError(f"cannot read {src.name}: use .npy, .parquet or .arrow/.feather")


@main.command(name="add-images")
@click.argument("path")
@click.argument("source")
@click.option("--limit", type=int, help="Add only the first LIMIT images.")
@click.option("--open-clip", "open_clip_model", help="Encode with this open_clip architecture "
              "instead of EfficientNet-Lite0 (with --checkpoint, or random weights).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="Local .pt/.safetensors open_clip checkpoint.")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@click.option("-m", "--message", help="Why these rows were added (kept in the audit).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def add_images(path, source, limit, open_clip_model, checkpoint, batch_size, message, fmt):
    """Encode the images of SOURCE with a frozen encoder and add them to the memory at PATH.

    SOURCE is a folder with one sub-folder of images per class (the folder
    name is the label, the file path the uri), or a dataset that can be had
    offline: fashion-mnist:train, fashion-mnist:test, digits:train, digits:test.
    """
    from .encoders import efficientnet_lite0, open_clip_image

    images, labels = _image_source(source, limit)
    mem = _open(path)  # before the encoder loads: a missing memory fails at once
    encoder = (open_clip_image(open_clip_model, checkpoint=checkpoint) if open_clip_model
               else efficientnet_lite0())
    res = mem.add_images(images, labels, encoder=encoder, message=message,
                         batch_size=batch_size, progress=True)
    _result(res, fmt)


@main.command()
@click.argument("path")
@click.argument("query")
@click.option("--at", "at", help="Run at this version number or tag.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--timeout", "timeout", type=float, default=SQLLimits.timeout, show_default=True,
              help="Stop the query after this many seconds.")
@click.option("--memory-limit", "memory_limit", default=SQLLimits.memory_limit, show_default=True,
              help="DuckDB memory the query may use, e.g. 500MB or 16GB.")
def sql(path, query, at, fmt, timeout, memory_limit):
    """Run a read-only SQL QUERY (tables samples, taxonomy, audit, tags).

    The query sees the memory's tables only: no files, no extensions, no settings.
    """
    mem = memstore.open(path, create=False, sql_timeout=timeout, sql_memory_limit=memory_limit)
    _emit(_at(mem, at).sql(query).to_arrow_table(), fmt)


@main.command()
@click.argument("path")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def versions(path, fmt):
    """List the versions of the memory: version, time, operation, message, rows."""
    _emit(_open(path).versions(), fmt)


@main.command()
@click.argument("path")
@click.argument("name")
@click.option("--version", "version", type=int, help="Version to tag (default: the newest).")
def tag(path, name, version):
    """Name a version of the memory NAME."""
    v = _open(path).tag(name, version)
    click.echo(f"tagged version {v} as {name!r}")


@main.command()
@click.argument("path")
@click.argument("ref")
@click.option("-m", "--message", help="Why (kept in the audit).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def restore(path, ref, message, fmt):
    """Make a new version equal to version or tag REF."""
    _result(_open(path).restore(_ref(ref), message=message), fmt)


def _sql_write_command(name: str, doc: str) -> None:
    """Register ``memstore NAME PATH SELECT``, one call of the Memory method NAME."""

    @main.command(name=name, help=doc)
    @click.argument("path")
    @click.argument("select")
    @click.option("-m", "--message", help="Why (kept in the audit).")
    @click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
    def command(path, select, message, fmt):
        _result(getattr(_open(path), name)(select, message=message), fmt)


_sql_write_command("prune", "Delete the rows whose ids SELECT returns (a query with one column: id).")
_sql_write_command("reweight", "Set quality weights from SELECT returning (id, weight).")
_sql_write_command("relabel", "Set labels from SELECT returning (id, label).")


@main.command()
@click.argument("path")
@click.argument("select")
@click.option("-m", "--message", help="Why (kept in the audit, with a hash of each row; never the data).")
@click.option("--rebuild-index", is_flag=True, help="Train the ANN index again without the rows.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def forget(path, select, message, rebuild_index, fmt):
    """Erase the rows SELECT returns (one id column), or comma-separated ids, for real.

    They leave every version, tag, index and file; the command checks the files
    before it reports success.
    """
    parts = [part.strip() for part in select.split(",")]
    if all(part.isdigit() for part in parts):  # an id list (Unicode digits too, to name them)
        bad = [part for part in parts if not _is_number(part)]
        if bad:
            raise click.BadParameter(f"{bad[0]!r} is not an id: ids are ASCII digits, e.g. 12,40,41",
                                     param_hint="SELECT")
        select = [int(part) for part in parts]
    report = _open(path).forget(select, message=message, rebuild_index=rebuild_index)
    _emit(_table({
        "version": [report.version], "rows": [report.rows], "files_scanned": [report.files_scanned],
        "bytes_scanned": [report.bytes_scanned], "still_held": [report.still_held],
        "seconds": [round(sum(report.seconds.values()), 2)]}), fmt)


@main.command()
@click.argument("path")
@click.option("-k", default=100, show_default=True, help="Neighbours each row looks at (leave-one-out).")
@click.option("--metric", default="cosine", show_default=True, type=click.Choice(["cosine", "dot", "l2"]))
@click.option("-m", "--message", help="Why (kept in the audit).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def quality(path, k, metric, message, fmt):
    """Count how often each row is a wrong-label neighbour (samples.wrong_count).

    Then prune or reweight with SQL, e.g.
    memstore reweight PATH "SELECT id, 1.75 / (1 + wrong_count) AS weight FROM samples"
    """
    _result(_open(path).estimate_quality(k=k, metric=metric, message=message, progress=True), fmt)


@main.command()
@click.argument("path")
@click.argument("source", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("-m", "--message", help="Why (kept in the audit).")
@click.option("--at", "at", help="Show the taxonomy of this version number or tag.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def taxonomy(path, source, message, at, fmt):
    """Show the label hierarchy, or set it from SOURCE.

    SOURCE is a CSV or Parquet file with columns node, parent (empty for a root)
    and optionally name, or a JSON object {node: parent or null}.
    """
    mem = _open(path)
    if source is None:
        _emit(_at(mem, at).taxonomy(), fmt)
        return
    if source.endswith(".json"):
        parents = json.loads(Path(source).read_text())
    elif source.endswith(".csv"):  # read as text: a node named "01" stays "01"; an empty parent is a root
        with open(source, newline="") as f:
            rows = list(csv.DictReader(f))
        parents = {c: [r[c] or None if c == "parent" else r[c] for r in rows] for c in (rows[0] if rows else {})}
    else:
        parents = _read_table(Path(source))
    _result(mem.set_taxonomy(parents, message=message), fmt)


def _at(mem: memstore.Memory, at: str | None) -> memstore.Memory:
    return mem if at is None else mem.at(_ref(at))


def _queries(source: str) -> np.ndarray:
    """Query vectors from a .npy file of shape (n, dim) or (dim,)."""
    if not source.endswith(".npy"):
        raise click.UsageError(f"QUERIES must be a .npy file of (n, dim) float vectors, got {source}")
    import numpy as np

    return np.load(source, allow_pickle=False)


@main.command()
@click.argument("path")
@click.option("--type", "index_type", default="IVF_PQ", show_default=True,
              type=click.Choice(["IVF_PQ", "IVF_HNSW_SQ", "IVF_SQ", "IVF_FLAT"]), help="LanceDB index type.")
@click.option("--metric", default="cosine", show_default=True, type=click.Choice(["cosine", "dot", "l2"]))
@click.option("--target-recall", default=0.95, show_default=True, type=float,
              help="Tune nprobes/refine_factor until recall@10 against exact search reaches this.")
@click.option("--partitions", type=int, help="IVF partitions (default: about sqrt(rows)).")
@click.option("-m", "--message", help="Why (kept in the audit).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def index(path, index_type, metric, target_recall, partitions, message, fmt):
    """Build an ANN index on the vectors, tuned and measured against exact search."""
    report = _open(path).create_index(index_type, metric, num_partitions=partitions,
                                      target_recall=target_recall, message=message)
    facts = report.as_dict() | {"speedup": round(report.speedup, 1)}
    _emit(_table({"key": list(facts), "value": [str(v) for v in facts.values()]}), fmt)


@main.command()
@click.argument("path")
@click.argument("queries", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", default=10, show_default=True, help="Neighbours per query.")
@click.option("--metric", default="cosine", show_default=True, type=click.Choice(["cosine", "dot", "l2"]))
@click.option("--index", "index_", default="auto", show_default=True,
              type=click.Choice(["auto", "exact", "ann"]), help="Exact search or the ANN index.")
@click.option("--at", "at", help="Search this version number or tag.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def search(path, queries, k, metric, index_, at, fmt):
    """The K nearest rows of each vector in QUERIES (.npy): query, rank, id, distance, label."""
    q = _queries(queries)
    mem = _at(_open(path), at)
    _emit(mem.search(q, k, metric=metric, index=index_), fmt)


@main.command()
@click.argument("path")
@click.argument("queries", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", default=50, show_default=True, help="Neighbours that vote.")
@click.option("--voting", default="rank", show_default=True,
              type=click.Choice(["plurality", "distance", "softmax", "rank"]))
@click.option("--at", "at", help="Classify with this version number or tag.")
@click.option("--level", type=int, help="Predict at this level of the taxonomy (0: the roots).")
@click.option("--explain", is_flag=True, help="One row per (query, neighbour) with its vote and provenance.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def classify(path, queries, k, voting, at, level, explain, fmt):
    """Classify each vector in QUERIES (.npy) with the kNN head; --explain attributes it to rows."""
    import numpy as np

    q = _queries(queries)
    mem = _at(_open(path), at)
    clf = memstore.KNNClassifier(k=k, voting=voting, level=level).fit(mem)
    if explain:
        _emit(clf.explain(q), fmt)
        return
    proba = clf.predict_proba(q)
    _emit(_table({
        "query": np.arange(len(q)),
        "predicted": clf.predict(q),
        "probability": proba.max(1),
        "memory_version": np.full(len(q), mem.version),
    }), fmt)


@main.command()
@click.argument("path")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def audit(path, fmt):
    """Show who changed what, when, and why: one row per version."""
    _emit(_open(path).audit(), fmt)


@main.command()
@click.argument("path")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def info(path, fmt):
    """Rows, dimension, labels, versions and size on disk."""
    facts = _open(path).info()
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2))
    else:
        _emit(_table({"key": list(facts), "value": [str(v) for v in facts.values()]}), fmt)


@main.command()
@click.argument("path")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def check(path, fmt):
    """Verify the memory end to end: every file's checksum, ids, intervals, the commit log.

    Like SQLite's integrity_check. Exits 1 with one line naming each damaged
    file; the memory then takes no write until a check passes again.
    """
    facts = _open(path).check().as_dict()
    facts.pop("problems")
    _emit(_table({"key": list(facts), "value": [str(v) for v in facts.values()]}), fmt)


@main.command()
@click.argument("path")
@click.option("-m", "--message", default=None, help="why, for the audit row")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def optimize(path, message, fmt):
    """Merge small fragments and drop Lance versions no memory version needs.

    Writes do this by themselves once a table is crowded; run it to shrink a
    memory now. One version of its own; every earlier version reads as before.
    """
    report = _open(path).optimize(message=message).as_dict()
    tables = report.pop("tables")
    rows = [{"table": name, **counts} for name, counts in sorted(tables.items())]
    _emit(_table({key: [r[key] for r in rows] for key in rows[0]}), fmt)
    click.echo(f"version {report['version']}: {report['files_before']:,} -> {report['files_after']:,} files, "
               f"{report['bytes_before']:,} -> {report['bytes_after']:,} bytes in {report['seconds']} s", err=True)


@main.command()
@click.argument("path")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; anything but loopback needs --token or --token-file")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, envvar="MEMSTORE_TOKEN",
              help="a secret every request must carry (Authorization: Bearer ...); env MEMSTORE_TOKEN")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="tokens, one `name:secret` a line; writes are audited with the name")
@click.option("--allow-writes", is_flag=True, help="let the page forget rows (read-only without it)")
def serve(path, host, port, token, token_file, allow_writes):
    """Serve the memory at PATH: a web page and a JSON API (OpenAPI schema at /docs).

    Binds to loopback by default; open http://127.0.0.1:8765/ in a browser.
    """
    from memstore.server import create_app, is_loopback

    tokens = _tokens(token, token_file)
    if not tokens and not is_loopback(host):
        raise click.UsageError(f"--host {host} accepts connections from other machines: give --token "
                               "(or --token-file) so that only those holding it can read the memory")
    import uvicorn

    _open(path)  # a clear error for a missing or damaged memory, before the server starts
    app = create_app(path, tokens=tokens, allow_writes=allow_writes, warm_up=True)
    click.echo(f"serving {path} at http://{host}:{port}/ ({'writes allowed' if allow_writes else 'read-only'}"
               f"{', token required' if tokens else ''})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _tokens(token: str | None, token_file: str | None) -> dict[str, str]:
    tokens = {"token": token} if token else {}
    if token_file:
        for number, line in enumerate(Path(token_file).read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, secret = line.strip().partition(":")
            if not sep or not name or len(secret) < 16:
                raise click.UsageError(f"{token_file}, line {number}: expected `name:secret` with a secret of "
                                       "16 characters or more")
            tokens[name] = secret
    return tokens


if __name__ == "__main__":
    main()

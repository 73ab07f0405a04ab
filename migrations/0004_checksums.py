"""Schema 4: the ``checksums`` table, a SHA-256 per file the memory's tables use.

Every later commit records the files its Lance writes made (see
memstore/check.py); this migration records the files that exist now, so a
memory made before checksums is verified from here on.
"""

from memstore.check import referenced_files, sha256_file
from memstore.schema import CHECKSUMS_SCHEMA, CHECKSUMS_TABLE
from memstore.versioning import LOG_TABLES


def up(tx):
    if tx.has_table(CHECKSUMS_TABLE):
        return
    store = tx.store
    rows = []
    for name in sorted(store.table_names() - LOG_TABLES):
        for rel in referenced_files(store, name, store.dataset(name)):
            path = store.path / rel
            rows.append({"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                         "version": tx.version})
    table = tx.create_table(CHECKSUMS_TABLE, CHECKSUMS_SCHEMA)
    if rows:
        import pyarrow as pa

        table.add(pa.Table.from_pylist(rows, schema=CHECKSUMS_SCHEMA))

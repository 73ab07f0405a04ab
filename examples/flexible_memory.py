"""A flexible visual memory on Fashion-MNIST: new classes, real forgetting, pruning, granularity.

The capabilities Geirhos et al. 2024 argue make an explicit memory worth having,
each as memstore API calls on real images (EfficientNet-Lite0 features, ImageNet
weights, frozen; no training anywhere). The head throughout is
``KNNClassifier(k=10, voting="rank")``, the best setting of examples/fashion_knn.py.

Data: the 60,000 Fashion-MNIST training images are cut, once and seeded, into a
memory of 50,000 and a validation split of 10,000, which is the only data any
threshold is chosen on; the 10,000 test images are used for reporting only.

1. Lifelong learning. A memory without two classes (Ankle boot, Bag) gets them in
   one add; accuracy on the old classes before and after (with its binomial
   standard error, the noise level) and on the new ones. Then images from outside
   Fashion-MNIST, scikit-learn's 8x8 digits (encoded by the same network, which
   resizes them), are added as ten new classes "digit 0".."digit 9".
2. Forgetting. 500 rows are forgotten for real (``mem.forget``); a head fitted
   afterwards is compared with one on a memory that never held them.
3. Pruning by quality. ``estimate_quality(k=100)`` counts wrong-neighbour
   appearances; hard pruning (``prune`` with ``wrong_count >= t``, t chosen on
   validation, each trial undone by ``restore``) and soft pruning
   (SoftRankVoting weights by ``reweight``), on the clean labels and with 10% of
   the memory's labels flipped to a random other class (our own noise, seeded).
4. Label granularity. Our coarse grouping of the ten classes (below), set as the
   memory's taxonomy; predictions at both levels; then a memory labelled only
   coarsely is refined one coarse group at a time by SQL relabels, and fine
   accuracy rises while coarse accuracy holds.

Coarse grouping (ours): tops = T-shirt/top, Pullover, Coat, Shirt; dresses = Dress;
bottoms = Trouser; footwear = Sandal, Sneaker, Ankle boot; bags = Bag.

    python examples/flexible_memory.py          # ~10 min on 2 cores once features are cached

Results: examples/results/flexible_memory.{json,md} and flexible_memory_refine.png.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import memstore
from memstore import data
from memstore.quality import SOFT_RANK_SQL

sys.path.insert(0, str(Path(__file__).parent))
from fashion_knn import CACHE, RESULTS, effnet_features  # noqa: E402

K, VOTING = 10, "rank"
NEW_CLASSES = ("Ankle boot", "Bag")
COARSE = {"T-shirt/top": "tops", "Pullover": "tops", "Coat": "tops", "Shirt": "tops", "Dress": "dresses",
          "Trouser": "bottoms", "Sandal": "footwear", "Sneaker": "footwear", "Ankle boot": "footwear",
          "Bag": "bags"}
TAXONOMY = {**{c: None for c in set(COARSE.values())}, **COARSE}
#: wrong-count thresholds tried on validation; at k=100 a row of 50,000 is a neighbour
#: ~100 times on average, so the grid runs past Geirhos et al.'s 128
THRESHOLDS = (10, 20, 40, 80, 128, 192, 256, 384, 512)
NOISE = 0.10


def acc(pred, truth) -> float:
    return round(100 * float((np.asarray(pred) == np.asarray(truth)).mean()), 2)


def stderr(p_percent: float, n: int) -> float:
    p = p_percent / 100
    return round(100 * float(np.sqrt(p * (1 - p) / n)), 2)


def paired_se(before, after, truth) -> float:
    """Standard error, in points, of the accuracy gain from ``before`` to ``after`` on the same images.

    Paired: sd(per-image difference in correctness) / sqrt(n), much smaller than two
    independent binomial errors when most images keep their prediction.
    """
    truth = np.asarray(truth)
    diff = (np.asarray(after) == truth).astype(np.float64) - (np.asarray(before) == truth)
    return round(100 * float(diff.std(ddof=1) / np.sqrt(len(diff))), 2)


def head(mem, level=None):
    return memstore.KNNClassifier(k=K, voting=VOTING, level=level).fit(mem)


def digits_features(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = data.load_digits(split)
    path = CACHE / f"digits-{split}-efficientnet_lite0.npy"
    if not path.exists():
        from memstore.encoders import efficientnet_lite0

        CACHE.mkdir(exist_ok=True)
        np.save(path, efficientnet_lite0().encode(ds.images, batch_size=128, progress=True))
    names = np.char.add("digit ", ds.label_names.astype(str))
    return np.load(path), names, ds.uris


def load():
    train, test = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    x = np.asarray(effnet_features("train", train.images, len(train)))
    q = np.asarray(effnet_features("test", test.images, len(test)))
    names = np.asarray(train.class_names)[train.labels]
    perm = np.random.default_rng(0).permutation(len(x))
    mem_rows, val_rows = np.sort(perm[:50_000]), np.sort(perm[50_000:])
    return {
        "x": x[mem_rows], "y": names[mem_rows], "uri": np.asarray(train.uris)[mem_rows],
        "xv": x[val_rows], "yv": names[val_rows],
        "q": q, "yq": np.asarray(test.class_names)[test.labels],
    }


def new_memory(root: Path, name: str, x, y, uri, message: str) -> memstore.Memory:
    mem = memstore.open(root / name)
    mem.add(x, y, provenance={"uri": uri, "dataset": "fashion-mnist", "split": "train"}, message=message)
    return mem


# -- 1. lifelong learning ------------------------------------------------------------
def lifelong(root: Path, d: dict) -> dict:
    old = ~np.isin(d["y"], NEW_CLASSES)
    mem = new_memory(root, "lifelong.mem", d["x"][old], d["y"][old], d["uri"][old], "8 classes")
    q_old, q_new = ~np.isin(d["yq"], NEW_CLASSES), np.isin(d["yq"], NEW_CLASSES)
    pred_before = head(mem).predict(d["q"][q_old])
    before = acc(pred_before, d["yq"][q_old])
    mem.add(d["x"][~old], d["y"][~old], provenance={"uri": d["uri"][~old], "dataset": "fashion-mnist"},
            message="new classes: " + ", ".join(NEW_CLASSES))
    clf = head(mem)
    pred_after = clf.predict(d["q"][q_old])
    right_before, right_after = pred_before == d["yq"][q_old], pred_after == d["yq"][q_old]
    out = {"old_classes_before": before, "old_classes_after": acc(pred_after, d["yq"][q_old]),
           # the old rows did not change, so a prediction can only move to or through a new class
           "old_now_predicted_new": int(np.isin(pred_after, NEW_CLASSES).sum()),
           "old_fixed": int((~right_before & right_after).sum()), "old_broken": int((right_before & ~right_after).sum()),
           "old_broken_to_new": int((right_before & ~right_after & np.isin(pred_after, NEW_CLASSES)).sum()),
           "new_classes_after": acc(clf.predict(d["q"][q_new]), d["yq"][q_new]),
           "all_after": acc(clf.predict(d["q"]), d["yq"]), "old_queries": int(q_old.sum()),
           "new_queries": int(q_new.sum())}
    out["old_stderr"] = stderr(before, out["old_queries"])
    # images from outside Fashion-MNIST as ten more classes
    xd, yd, ud = digits_features("train")
    xdt, ydt, _ = digits_features("test")
    fashion_before = out["all_after"]
    mem.add(xd, yd, provenance={"uri": ud, "dataset": "digits", "split": "train"}, message="digits as new classes")
    clf = head(mem)
    out.update({"digit_rows": len(xd), "digit_queries": len(xdt), "digits_after": acc(clf.predict(xdt), ydt),
                "fashion_before_digits": fashion_before, "fashion_after_digits": acc(clf.predict(d["q"]), d["yq"]),
                "fashion_predicted_as_digit": acc(np.char.startswith(clf.predict(d["q"]).astype(str), "digit"),
                                                  True)})
    print("lifelong", out, flush=True)
    return out


# -- 2. forgetting -------------------------------------------------------------------------
def forgetting(root: Path, d: dict) -> dict:
    mem = new_memory(root, "forget.mem", d["x"], d["y"], d["uri"], "memory")
    gone = np.sort(np.random.default_rng(1).choice(len(d["x"]), 500, replace=False))
    report = mem.forget(gone, message="500 rows whose consent was withdrawn")
    kept = np.setdiff1d(np.arange(len(d["x"])), gone)
    never = new_memory(root, "never.mem", d["x"][kept], d["y"][kept], d["uri"][kept], "never held them")
    p_after, p_never = head(mem).predict_proba(d["q"]), head(never).predict_proba(d["q"])
    out = {"rows": report.rows, "seconds": report.seconds, "files_scanned": report.files_scanned,
           "bytes_scanned": report.bytes_scanned, "still_held": report.still_held,
           "identical_probabilities": bool(np.array_equal(p_after, p_never)),
           "rows_in_version_1": len(mem.at(1))}
    print("forget", out, flush=True)
    return out


# -- 3. pruning by quality ---------------------------------------------------------------
def pruning(root: Path, d: dict, noise: float) -> dict:
    y = d["y"].copy()
    if noise:
        rng = np.random.default_rng(2)
        flip = rng.random(len(y)) < noise
        classes = np.array(sorted(set(y)))
        shift = rng.integers(1, len(classes), flip.sum())
        y[flip] = classes[(np.searchsorted(classes, y[flip]) + shift) % len(classes)]
    mem = new_memory(root, f"prune-{noise}.mem", d["x"], y, d["uri"], f"memory, {noise:.0%} labels flipped")
    t = time.perf_counter()
    mem.estimate_quality(k=100)
    out = {"noise": noise, "estimate_s": round(time.perf_counter() - t, 1)}
    base = mem.version
    pred_before = head(mem).predict(d["q"])
    out["val_before"], out["test_before"] = acc(head(mem).predict(d["xv"]), d["yv"]), acc(pred_before, d["yq"])
    if noise:
        counts = mem.sql("SELECT id, wrong_count FROM samples ORDER BY id").to_arrow_table()["wrong_count"].to_numpy()
        out["mean_count_flipped"] = round(float(counts[flip].mean()), 1)
        out["mean_count_clean"] = round(float(counts[~flip].mean()), 1)
    trials = []
    for threshold in THRESHOLDS:
        res = mem.prune(f"SELECT id FROM samples WHERE wrong_count >= {threshold}", message=f"t={threshold}") \
            if mem.sql(f"SELECT count(*) FROM samples WHERE wrong_count >= {threshold}").fetchall()[0][0] else None
        trials.append({"threshold": threshold, "pruned": 0 if res is None else res.rows,
                       "val": acc(head(mem).predict(d["xv"]), d["yv"])})
        mem.restore(base, message="undo trial")
    # no pruning is a candidate too: where it wins on validation, the memory stays whole
    trials.append({"threshold": None, "pruned": 0, "val": out["val_before"]})
    best = max(trials, key=lambda r: (r["val"], r["threshold"] is None, r["threshold"] or 0))
    if best["threshold"] is not None:
        mem.prune(f"SELECT id FROM samples WHERE wrong_count >= {best['threshold']}", message="hard pruning")
    pred_hard = head(mem).predict(d["q"])
    out.update({"hard_trials": trials, "hard_threshold": best["threshold"], "hard_pruned": best["pruned"],
                "hard_val": best["val"], "hard_test": acc(pred_hard, d["yq"]),
                "hard_gain_se": paired_se(pred_before, pred_hard, d["yq"])})
    if best["threshold"] is not None:
        mem.restore(base, message="back to the unpruned memory")
    mem.reweight(SOFT_RANK_SQL, message="SoftRankVoting weights")
    pred_soft = head(mem).predict(d["q"])
    out["soft_val"], out["soft_test"] = acc(head(mem).predict(d["xv"]), d["yv"]), acc(pred_soft, d["yq"])
    out["soft_gain_se"] = paired_se(pred_before, pred_soft, d["yq"])
    print("pruning", out, flush=True)
    return out


# -- 4. label granularity ----------------------------------------------------------------------
def granularity(root: Path, d: dict) -> dict:
    mem = new_memory(root, "taxonomy.mem", d["x"], d["y"], d["uri"], "fine labels")
    mem.set_taxonomy(TAXONOMY, message="our coarse grouping of Fashion-MNIST")
    coarse_q = np.array([COARSE[c] for c in d["yq"]])
    out = {"per_coarse_class": dict(mem.sql(
        "SELECT t.parent, count(*) FROM samples s JOIN taxonomy t ON t.node = s.label GROUP BY 1 ORDER BY 1"
    ).fetchall()), "fine_at_level_1": acc(head(mem, 1).predict(d["q"]), d["yq"]),
        "coarse_at_level_0": acc(head(mem, 0).predict(d["q"]), coarse_q)}
    # from coarse-only labels, refine one coarse group at a time
    fine = pa.table({"uri": d["uri"], "fine": d["y"]})
    mem.relabel("SELECT s.id, t.parent AS label FROM samples s JOIN taxonomy t ON t.node = s.label",
                message="coarse labels only")
    steps = []
    for group in [None, "footwear", "bags", "bottoms", "dresses", "tops"]:
        if group is not None:
            mem.relabel(f"SELECT s.id, f.fine AS label FROM samples s JOIN f USING (uri) WHERE s.label = '{group}'",
                        tables={"f": fine}, message=f"refine {group}")
        steps.append({"refined": group or "(none)", "fine": acc(head(mem, 1).predict(d["q"]), d["yq"]),
                      "coarse": acc(head(mem, 0).predict(d["q"]), coarse_q)})
        print("refine", steps[-1], flush=True)
    out["refine"] = steps
    return out


def plot(steps: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = ["coarse only"] + [f"+ {s['refined']}" for s in steps[1:]]
    ax.plot(labels, [s["fine"] for s in steps], "o-", label="fine (10 classes), level 1")
    ax.plot(labels, [s["coarse"] for s in steps], "s-", label="coarse (5 groups), level 0")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Refining a coarsely labelled memory, one group at a time")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(r: dict) -> str:
    lf, fg, gr = r["lifelong"], r["forget"], r["granularity"]
    lines = ["# Flexible memory on Fashion-MNIST", "", f"Head: KNNClassifier(k={K}, voting='{VOTING}'); "
             "memory 50,000 training images, validation 10,000 (thresholds only), test 10,000.", "",
             "## Lifelong learning", "",
             "| | old classes | new classes | all |", "|---|---|---|---|",
             f"| 8 classes in memory | {lf['old_classes_before']} ± {lf['old_stderr']} | - | - |",
             f"| + Ankle boot, Bag | {lf['old_classes_after']} | {lf['new_classes_after']} | {lf['all_after']} |", "",
             f"Of the {lf['old_queries']:,} old-class test images, {lf['old_broken']} went from right to wrong "
             f"({lf['old_broken_to_new']} of them to a new class) and {lf['old_fixed']} from wrong to right; "
             f"{lf['old_now_predicted_new']} are now predicted as a new class.", "",
             f"Digits as 10 new classes ({lf['digit_rows']} rows): digit test accuracy {lf['digits_after']}% "
             f"({lf['digit_queries']} queries, 20 classes to choose from); Fashion-MNIST test accuracy "
             f"{lf['fashion_before_digits']}% before, {lf['fashion_after_digits']}% after; "
             f"{lf['fashion_predicted_as_digit']}% of Fashion test images predicted as a digit.", "",
             "## Forgetting", "",
             f"Forgot {fg['rows']} rows of 50,000: {sum(fg['seconds'].values()):.1f} s ({fg['seconds']}); "
             f"checked {fg['files_scanned']} files, {fg['bytes_scanned'] / 1e6:.0f} MB. Probabilities of a head "
             f"fitted afterwards identical to a memory that never held them: {fg['identical_probabilities']}.", "",
             "## Pruning by quality (wrong-neighbour counts, k=100)", "",
             "| labels | test before | hard: threshold (val) | rows pruned | hard test | soft test |",
             "|---|---|---|---|---|---|"]
    for p in r["pruning"]:
        labels = "clean" if not p["noise"] else f"{p['noise']:.0%} flipped"
        chosen = "none" if p["hard_threshold"] is None else p["hard_threshold"]
        lines.append(f"| {labels} | {p['test_before']} | "
                     f"{chosen} ({p['hard_val']} vs {p['val_before']}) | {p['hard_pruned']:,} | "
                     f"{p['hard_test']} | {p['soft_test']} |")
    for p in r["pruning"]:
        trials = ", ".join(f"{t['threshold']}: {t['val']} ({t['pruned']:,} rows)" for t in p["hard_trials"]
                           if t["threshold"] is not None)
        lines += ["", f"Validation accuracy by threshold, {p['noise']:.0%} flipped: {trials}."]
        if p["noise"]:
            lines.append(f"Mean wrong_count of flipped rows {p['mean_count_flipped']}, of the others "
                         f"{p['mean_count_clean']}.")
    lines += ["", "## Label granularity", "",
              f"Rows per coarse class: {gr['per_coarse_class']}. Fine accuracy (level 1) {gr['fine_at_level_1']}%, "
              f"coarse (level 0) {gr['coarse_at_level_0']}%.", "",
              "| refined so far | fine accuracy | coarse accuracy |", "|---|---|---|"]
    lines += [f"| {s['refined']} | {s['fine']} | {s['coarse']} |" for s in gr["refine"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    if not data.fashion_mnist_available():
        sys.exit("Fashion-MNIST is missing: `make data` installs Debian's dataset-fashion-mnist")
    start = time.perf_counter()
    d = load()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        r = {"lifelong": lifelong(root, d), "forget": forgetting(root, d),
             "pruning": [pruning(root, d, 0.0), pruning(root, d, NOISE)], "granularity": granularity(root, d)}
    r["runtime_s"] = round(time.perf_counter() - start, 1)
    (RESULTS / "flexible_memory.json").write_text(json.dumps(r, indent=2) + "\n")
    (RESULTS / "flexible_memory.md").write_text(report(r))
    plot(r["granularity"]["refine"], RESULTS / "flexible_memory_refine.png")
    print(report(r))


if __name__ == "__main__":
    main()

"""RAC on a long-tailed Fashion-MNIST: base alone, kNN alone, and the two fused.

The long-tailed training set (our own construction, in the manner of CIFAR-LT):
class c of Fashion-MNIST, in its index order (0 T-shirt/top ... 9 Ankle boot),
keeps n_c = round(5000 * 100^(-c/9)) of its training images, a seeded random
choice: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50; imbalance 100,
12,506 images. A balanced validation set takes 500 other training images of
every class, and the balanced test set is Fashion-MNIST's 10,000 test images.
Groups, by training images: many-shot > 1000 (classes 0-3), medium-shot
200-1000 (4-6), few-shot < 200 (7-9).

What is compared, all trained here on the CPU:

* **base alone**: a small CNN on the pixels (``SmallCNN`` of resmem_fashion.py),
  AdamW with a cosine schedule, the same epochs and loss as RAC;
* **kNN alone**: ``memstore.KNNClassifier`` over the memory, EfficientNet-Lite0
  features (ImageNet weights, frozen) of the long-tailed training images; k and
  voting chosen on validation;
* **RAC**: ``memstore.RACClassifier``, the same CNN as base branch, the same
  memory read by the retrieval branch (k=16, each training row left out of its
  own neighbours), trained end to end; with the label read as a learned token,
  and as text through all-MiniLM-L6-v2.

Each is trained with cross-entropy and with the logit-adjusted loss (τ=1).
Last, **a memory that grows after training**: 500 more images of each
few-shot class are added to the memory, and the fitted RAC reads the new
version (``rac.use_memory``) without retraining.

    python examples/rac_fashion_lt.py [--epochs 20]

Results: examples/results/rac_fashion_lt.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import memstore
from memstore.encoders import sentence_transformer
from memstore.data import load_fashion_mnist

from fashion_knn import effnet_features
from resmem_fashion import SmallCNN, as_input

RESULTS = Path(__file__).parent / "results"
N_MAX, IMBALANCE, VAL_PER_CLASS, GROWTH = 5000, 100, 500, 500
GROUPS = {"many": lambda n: n > 1000, "medium": lambda n: 200 <= n <= 1000, "few": lambda n: n < 200}


def long_tail_split(labels: np.ndarray, seed: int = 0):
    """(LT train, balanced validation, spare) indices into the training set, and the class sizes."""
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    sizes = [round(N_MAX * IMBALANCE ** (-c / (n_classes - 1))) for c in range(n_classes)]
    train, val, spare = [], [], []
    for c, n in enumerate(sizes):
        rows = rng.permutation(np.flatnonzero(labels == c))
        train.append(rows[:n])
        val.append(rows[-VAL_PER_CLASS:])
        spare.append(rows[n:-VAL_PER_CLASS])
    return np.concatenate(train), np.concatenate(val), spare, np.array(sizes)


def group_accuracy(pred: np.ndarray, truth: np.ndarray, sizes: np.ndarray) -> dict:
    """Accuracy on all test images and per shot group (the test set is balanced)."""
    out = {"all": float((pred == truth).mean())}
    for name, member in GROUPS.items():
        classes = np.flatnonzero([member(n) for n in sizes])
        rows = np.isin(truth, classes)
        out[name] = float((pred[rows] == truth[rows]).mean())
    return out


def train_base(X, y, epochs: int, logit_adjustment: float, seed: int = 0, batch_size: int = 128) -> SmallCNN:
    """The base alone, trained as RACClassifier trains its base branch (AdamW, cosine, same loss)."""
    torch.manual_seed(seed)
    model = SmallCNN()
    steps = epochs * math.ceil(len(y) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    prior = np.bincount(y, minlength=10) / len(y)
    adjust = torch.tensor(logit_adjustment * np.log(prior), dtype=torch.float32)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y)).numpy()
        for lo in range(0, len(y), batch_size):
            idx = order[lo:lo + batch_size]
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(X[idx])) + adjust,
                                                     torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return model.eval()


def predict_base(model, X) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(torch.from_numpy(X[i:i + 2048])).argmax(1) for i in range(0, len(X), 2048)]).numpy()


def knn_alone(mem, val_q, val_y, test_q, class_names) -> tuple[dict, np.ndarray]:
    """kNN head: k and voting chosen on the balanced validation set."""
    names = np.asarray(class_names)
    grid = []
    for k in (1, 3, 10, 30):
        for voting in ("plurality", "rank"):
            clf = memstore.KNNClassifier(k=k, voting=voting).fit(mem)
            grid.append({"k": k, "voting": voting, "validation": float((clf.predict(val_q) == names[val_y]).mean())})
    best = max(grid, key=lambda r: r["validation"])
    clf = memstore.KNNClassifier(k=best["k"], voting=best["voting"]).fit(mem)
    index = {n: i for i, n in enumerate(class_names)}
    return {"grid": grid, "best": best}, np.array([index[p] for p in clf.predict(test_q)])


def rac_predict(rac, X, queries, index: dict) -> np.ndarray:
    return np.array([index[p] for p in rac.predict(X, queries=np.asarray(queries))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    train_all, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    names = list(train_all.class_names)
    lt, val, spare, sizes = long_tail_split(train_all.labels)
    feats, test_feats = effnet_features("train", train_all.images, 60_000), effnet_features("test", test.images, 10_000)
    X, y = as_input(train_all.images), train_all.labels
    X_test, y_test = as_input(test.images), test.labels
    named = np.asarray(names)  # RAC's classes are the memory's labels: rows can then support a class
    index = {n: i for i, n in enumerate(names)}
    print("class sizes", sizes.tolist(), "train", len(lt), flush=True)

    mem = memstore.open(tempfile.mkdtemp(prefix="rac-") + "/fashion-lt.mem")
    ids = mem.add(np.asarray(feats[lt]), [names[c] for c in y[lt]],
                  provenance={"uri": [train_all.uris[i] for i in lt], "split": "train-lt"},
                  message="long-tailed Fashion-MNIST, EfficientNet-Lite0 features").ids
    mem.tag("lt")
    results = {"sizes": sizes.tolist(), "epochs": args.epochs, "rows": {}}

    def report(name: str, pred: np.ndarray, seconds: float, **extra) -> None:
        row = {**group_accuracy(pred, y_test, sizes), "seconds": seconds, **extra}
        results["rows"][name] = row
        print(f"{name}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in row.items() if k in ("all", *GROUPS))
              + f" ({seconds:.0f} s)", flush=True)

    t = time.perf_counter()
    knn, pred = knn_alone(mem, np.asarray(feats[val]), y[val], np.asarray(test_feats), names)
    report("kNN alone (EfficientNet-Lite0 memory)", pred, time.perf_counter() - t, choice=knn["best"])
    results["knn_grid"] = knn["grid"]

    text_encoder = sentence_transformer(device="cpu")
    fitted = {}
    for tau in (0.0, 1.0):
        loss = "CE" if tau == 0 else "logit-adjusted"
        t = time.perf_counter()
        base = train_base(X[lt], y[lt], args.epochs, tau)
        report(f"base alone (CNN), {loss}", predict_base(base, X_test), time.perf_counter() - t)
        for label_as, encoder in (("label token", None), ("label text", text_encoder)):
            t = time.perf_counter()
            rac = memstore.RACClassifier(mem, base_model=SmallCNN(), k=16, text_encoder=encoder,
                                         logit_adjustment=tau, epochs=args.epochs)
            rac.fit(X[lt], named[y[lt]], queries=np.asarray(feats[lt]), memory_ids=ids)
            report(f"RAC ({label_as}), {loss}", rac_predict(rac, X_test, test_feats, index),
                   time.perf_counter() - t, final_loss=rac.history_[-1], scale=float(rac.model_.log_scale.detach().exp()))
            fitted[(tau, label_as)] = rac

    # a memory that grows after training: more images of the few-shot classes, no retraining
    few = [c for c in range(10) if GROUPS["few"](sizes[c])]
    extra = np.concatenate([spare[c][:GROWTH] for c in few])
    mem.add(np.asarray(feats[extra]), [names[c] for c in y[extra]],
            provenance={"uri": [train_all.uris[i] for i in extra], "split": "train-extra"},
            message=f"{GROWTH} more images of each few-shot class")
    for (tau, label_as), rac in fitted.items():
        loss = "CE" if tau == 0 else "logit-adjusted"
        rac.use_memory(mem)
        report(f"RAC ({label_as}), {loss}, memory + {GROWTH}/few-shot class, not retrained",
               rac_predict(rac, X_test, test_feats, index), 0.0)
    knn_grown = memstore.KNNClassifier(k=knn["best"]["k"], voting=knn["best"]["voting"]).fit(mem)
    report(f"kNN alone, memory + {GROWTH}/few-shot class", np.array([index[p] for p in knn_grown.predict(
        np.asarray(test_feats))]), 0.0)

    # attribution: the rows behind one few-shot test prediction
    rac = fitted[(1.0, "label text")]
    # the first test image of the rarest class that RAC gets right and the base alone does not
    base_pred = predict_base(base, X_test)
    right = rac_predict(rac, X_test, test_feats, index) == y_test
    candidates = np.flatnonzero((y_test == few[-1]) & right & (base_pred != y_test))
    query = int(candidates[0] if len(candidates) else np.flatnonzero(y_test == few[-1])[0])
    why = rac.explain(X_test[query:query + 1], queries=np.asarray(test_feats[query:query + 1]))
    why = why.sort_by([("share", "descending")]).slice(0, 5)
    results["explain_example"] = {"test_image": query, "true": names[y_test[query]],
                                  "base_alone": names[base_pred[query]], "rows": why.to_pylist()}

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rac_fashion_lt.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = ["# RAC on long-tailed Fashion-MNIST", "",
             f"Training images per class (index order): {', '.join(map(str, sizes))} (imbalance {IMBALANCE}); "
             f"balanced test set, 1,000 images a class. {args.epochs} epochs for every trained model.", "",
             "| model | all | many-shot | medium-shot | few-shot |", "|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[g]:.2f}%" for g in ("all", *GROUPS)) + " |")
    lines += ["", f"kNN alone: k={knn['best']['k']}, voting {knn['best']['voting']} (validation "
                  f"{100 * knn['best']['validation']:.2f}%).", "",
              f"Why RAC (label text, logit-adjusted) says what it says about test image {query} "
              f"(true class {names[y_test[query]]}; the base alone says {names[base_pred[query]]}), the five rows of the largest share (``rac.explain``; share: the "
              "row's part of the retrieval logit; if forgotten: the change of the fused logit were the row "
              "forgotten):", "",
              "| rank | id | label | distance | share | if forgotten | predicted | base part | retrieval part |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results["explain_example"]["rows"]:
        lines.append(f"| {r['rank']} | {r['id']} | {r['label']} | {r['distance']:.3f} | {r['share']:+.3f} | "
                     f"{-r['contribution']:+.3f} | {r['predicted']} | {r['base_part']:.2f} | {r['retrieval_part']:.2f} |")
    (RESULTS / "rac_fashion_lt.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

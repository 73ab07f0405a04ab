"""RAC on a long-tailed Fashion-MNIST: base alone, kNN alone, and the two fused.

The long-tailed training set (our own construction, in the manner of CIFAR-LT):
the class of rank r keeps n_r = round(5000 * 100^(-r/9)) of its training
images, a seeded random choice: 5000, 2997, 1797, 1077, 646, 387, 232, 139, 83,
50; imbalance 100, 12,408 images. Two rankings are run, because Fashion-MNIST's
classes differ in difficulty and a single ranking confounds the shot groups
with it: the index order (0 T-shirt/top is the head, 9 Ankle boot the tail)
and the reverse. A balanced validation set takes 500 other training images
of every class; the balanced test set is Fashion-MNIST's 10,000 test images.
Groups, by training images: many-shot > 1000 (4 classes), medium-shot
200-1000 (3), few-shot < 200 (3).

What is compared, all trained here on the CPU, each over --seeds seeds:

* **base alone**: a small CNN on the pixels (``SmallCNN`` of resmem_fashion.py),
  AdamW with a cosine schedule, the same epochs and loss as RAC;
* **kNN alone**: ``memstore.KNNClassifier`` over the memory, EfficientNet-Lite0
  features (ImageNet weights, frozen) of the long-tailed training images; k and
  voting chosen on validation;
* **RAC**: ``memstore.RACClassifier``, the same CNN as base branch, the same
  memory read by the retrieval branch (k=16, each training row left out of its
  own neighbours), trained end to end; with the label read as a learned token,
  and as text through all-MiniLM-L6-v2. Also reported: what each of RAC's two
  branches alone would predict (``rac.decision_parts``).

Each is trained with cross-entropy and with the logit-adjusted loss (τ=1).
Last, **a memory that grows after training**: 500 more images of each
few-shot class are added to the memory, and the fitted RACs read the new
version (``rac.use_memory``) without retraining.

    python examples/rac_fashion_lt.py [--epochs 20] [--seeds 2]   # about 40 minutes

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


def long_tail_split(labels: np.ndarray, ranking: list[int], seed: int = 0):
    """(LT train, balanced validation, spare) indices into the training set, and the class sizes.

    ``ranking[r]`` is the class of rank r (rank 0 keeps the most images).
    """
    rng = np.random.default_rng(seed)
    n_classes = len(ranking)
    sizes = np.empty(n_classes, np.int64)
    for r, c in enumerate(ranking):
        sizes[c] = round(N_MAX * IMBALANCE ** (-r / (n_classes - 1)))
    train, val, spare = [], [], []
    for c in range(n_classes):
        rows = rng.permutation(np.flatnonzero(labels == c))
        train.append(rows[:sizes[c]])
        val.append(rows[-VAL_PER_CLASS:])
        spare.append(rows[sizes[c]:-VAL_PER_CLASS])
    return np.concatenate(train), np.concatenate(val), spare, sizes


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
    return {"grid": grid, "best": best}, predicted_indices(clf, None, test_q, {n: i for i, n in enumerate(class_names)})


def predicted_indices(head, X, queries, index: dict) -> np.ndarray:
    """Class indices predicted by a RAC (X: its base input) or a kNN head (X is None)."""
    names = head.predict(queries) if X is None else head.predict(X, queries=queries)
    return np.array([index[p] for p in names])


class Data:
    """Fashion-MNIST as the runs read it: pixels for the CNNs, cached EfficientNet-Lite0 features."""

    def __init__(self):
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        self.names = list(train.class_names)
        self.named = np.asarray(self.names)  # RAC's classes are the memory's labels: rows can support a class
        self.index = {n: i for i, n in enumerate(self.names)}
        self.uris = train.uris
        self.X, self.y = as_input(train.images), train.labels
        self.X_test, self.y_test = as_input(test.images), test.labels
        self.feats = np.asarray(effnet_features("train", train.images, 60_000))
        self.test_feats = np.asarray(effnet_features("test", test.images, 10_000))


def run(data: Data, ranking: list[int], seeds: int, epochs: int, text_encoder, explain: bool) -> dict:
    """Every model of the comparison on one long-tailed split, each training seed in turn."""
    d = data
    lt, val, spare, sizes = long_tail_split(d.y, ranking)
    mem = memstore.open(tempfile.mkdtemp(prefix="rac-") + "/fashion-lt.mem")
    ids = mem.add(d.feats[lt], d.named[d.y[lt]], provenance={"uri": [d.uris[i] for i in lt], "split": "train-lt"},
                  message="long-tailed Fashion-MNIST, EfficientNet-Lite0 features").ids
    mem.tag("lt")
    # the memory after training: more images of the few-shot classes (the models read it with no retraining)
    few = [c for c in range(10) if GROUPS["few"](sizes[c])]
    extra = np.concatenate([spare[c][:GROWTH] for c in few])
    mem.add(d.feats[extra], d.named[d.y[extra]], provenance={"uri": [d.uris[i] for i in extra], "split": "extra"},
            message=f"{GROWTH} more images of each few-shot class")
    mem.tag("grown")
    out = {"sizes": sizes.tolist(), "rows": {}}

    def report(name: str, pred: np.ndarray, seconds: float = 0.0, **extra) -> None:
        row = {**group_accuracy(pred, d.y_test, sizes), "seconds": seconds, **extra}
        out["rows"].setdefault(name, []).append(row)
        print(f"  {name}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in row.items() if k in ("all", *GROUPS))
              + (f" ({seconds:.0f} s)" if seconds else ""), flush=True)

    t = time.perf_counter()
    knn, pred = knn_alone(mem.at("lt"), d.feats[val], d.y[val], d.test_feats, d.names)
    report("kNN alone (EfficientNet-Lite0 memory)", pred, time.perf_counter() - t, choice=knn["best"])
    out["knn_grid"] = knn["grid"]
    knn_grown = memstore.KNNClassifier(k=knn["best"]["k"], voting=knn["best"]["voting"]).fit(mem.at("grown"))
    report(f"kNN alone, memory + {GROWTH}/few-shot class", predicted_indices(knn_grown, None, d.test_feats, d.index))
    for seed in range(seeds):
        for tau in (0.0, 1.0):
            loss = "CE" if tau == 0 else "logit-adjusted"
            t = time.perf_counter()
            base = train_base(d.X[lt], d.y[lt], epochs, tau, seed=seed)
            report(f"base alone (CNN), {loss}", predict_base(base, d.X_test), time.perf_counter() - t)
            for label_as, encoder in (("label token", None), ("label text", text_encoder)):
                name = f"RAC ({label_as}), {loss}"
                t = time.perf_counter()
                rac = memstore.RACClassifier(mem.at("lt"), base_model=SmallCNN(), k=16, text_encoder=encoder,
                                             logit_adjustment=tau, epochs=epochs, random_state=seed)
                rac.fit(d.X[lt], d.named[d.y[lt]], queries=d.feats[lt], memory_ids=ids)
                report(name, predicted_indices(rac, d.X_test, d.test_feats, d.index), time.perf_counter() - t,
                       final_loss=rac.history_[-1], scale=float(rac.model_.log_scale.detach().exp()))
                for branch, part in zip(("base", "retrieval"), rac.decision_parts(d.X_test, queries=d.test_feats)):
                    alone = rac.classes_[part.argmax(1)]  # classes_ are sorted names, not Fashion's order
                    report(f"{name}: its {branch} branch alone", np.array([d.index[c] for c in alone]))
                if explain and seed == 0 and tau == 1.0 and label_as == "label text":
                    out["explain_example"] = explain_one(d, rac, base, few[-1])
                rac.use_memory(mem.at("grown"))
                report(f"{name}, memory + {GROWTH}/few-shot class, not retrained",
                       predicted_indices(rac, d.X_test, d.test_feats, d.index))
    return out


def explain_one(d: Data, rac, base, rarest: int) -> dict:
    """The rows behind one test prediction: the first image of the rarest class that RAC gets
    right and the base alone does not."""
    base_pred = predict_base(base, d.X_test)
    right = predicted_indices(rac, d.X_test, d.test_feats, d.index) == d.y_test
    candidates = np.flatnonzero((d.y_test == rarest) & right & (base_pred != d.y_test))
    query = int(candidates[0] if len(candidates) else np.flatnonzero(d.y_test == rarest)[0])
    why = rac.explain(d.X_test[query:query + 1], queries=d.test_feats[query:query + 1])
    why = why.sort_by([("contribution", "descending")])
    return {"test_image": query, "true": d.names[d.y_test[query]], "base_alone": d.names[base_pred[query]],
            "rows": why.to_pylist()}  # all k, the rows that count most for the prediction first


def summary(rows: list[dict]) -> dict:
    """Mean and spread (max - min) over seeds of each accuracy."""
    return {g: (float(np.mean([r[g] for r in rows])), float(np.ptp([r[g] for r in rows]))) for g in ("all", *GROUPS)}


def markdown(results: dict) -> str:
    lines = ["# RAC on long-tailed Fashion-MNIST", "",
             f"Imbalance {IMBALANCE}: training images per class rank {', '.join(map(str, results['sizes_by_rank']))}; "
             f"balanced test set, 1,000 images a class. {results['epochs']} epochs for every trained model; "
             f"mean over {results['seeds']} training seeds (± half the range). Test accuracy:", ""]
    for order, run_out in results["orders"].items():
        head = [n for n, c in zip(results["names"], run_out["sizes"]) if c > 1000]
        few = [n for n, c in zip(results["names"], run_out["sizes"]) if c < 200]
        lines += [f"## Ranking: {order} (many-shot: {', '.join(head)}; few-shot: {', '.join(few)})", "",
                  "| model | all | many-shot | medium-shot | few-shot |", "|---|---|---|---|---|"]
        for name, rows in run_out["rows"].items():
            cells = [f"{100 * m:.2f} ± {50 * r:.2f}" if len(rows) > 1 else f"{100 * m:.2f}"
                     for m, r in summary(rows).values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        knn = run_out["rows"]["kNN alone (EfficientNet-Lite0 memory)"][0]["choice"]
        lines += ["", f"kNN alone: k={knn['k']}, voting {knn['voting']}, chosen on validation "
                      f"({100 * knn['validation']:.2f}%).", ""]
    ex = results["orders"]["index"].get("explain_example")
    if ex:
        lines += [f"Why RAC (label text, logit-adjusted; index ranking) says what it says about test image "
                  f"{ex['test_image']} (true class {ex['true']}; the base alone says {ex['base_alone']}): the "
                  f"{len(ex['rows'])} rows it read (`rac.explain`), by contribution: how much the predicted "
                  "class's logit would drop were the row forgotten (the next row taking its place).", "",
                  f"Predicted: {ex['rows'][0]['predicted']}; base part {ex['rows'][0]['base_part']:.2f}, retrieval "
                  f"part {ex['rows'][0]['retrieval_part']:.2f} of its logit.", "",
                  "| rank | id | label | distance | contribution |", "|---|---|---|---|---|"]
        for r in ex["rows"]:
            lines.append(f"| {r['rank']} | {r['id']} | {r['label']} | {r['distance']:.3f} | {r['contribution']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = Data()
    text_encoder = sentence_transformer(device="cpu")
    results = {"epochs": args.epochs, "seeds": args.seeds, "names": data.names, "orders": {},
               "sizes_by_rank": [round(N_MAX * IMBALANCE ** (-r / 9)) for r in range(10)]}
    for order, ranking in (("index", list(range(10))), ("reversed", list(range(9, -1, -1)))):
        print(f"ranking {order}", flush=True)
        results["orders"][order] = run(data, ranking, args.seeds, args.epochs, text_encoder, explain=order == "index")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rac_fashion_lt.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (RESULTS / "rac_fashion_lt.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""ResMem on Fashion-MNIST: a small CNN trained here, then its residuals memorised.

Two base models, both trained here on the CPU (Adam, batch 128):

* a full one: the 50,000 training images, --epochs epochs;
* a weak one: 2,000 of those images (a subset, seeded), the same number of steps;

and for each, ``memstore.ResMem`` fitted on all 50,000 training images (their
residuals go into the memory: for the weak model, mostly rows it never saw). k and σ are chosen on 10,000
validation images held out of Fashion-MNIST's training set (k in {1, 5, 10,
25, 50, 100}, σ in {0.1, 0.3, 1, 3, 10} times the median distance to the
nearest row); the test set (10,000 images) is used only to report.

    python examples/resmem_fashion.py [--epochs 3]

Results: examples/results/resmem_fashion.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import memstore
from memstore.data import load_fashion_mnist
from memstore.heads.resmem import model_outputs

RESULTS = Path(__file__).parent / "results"
KS = (1, 5, 10, 25, 50, 100)
SIGMA_SCALES = (0.1, 0.3, 1.0, 3.0, 10.0)


class SmallCNN(torch.nn.Module):
    """Two conv blocks and a 64-d penultimate layer: the embedding ResMem searches."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 64), torch.nn.ReLU())
        self.classifier = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


def as_input(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0 - 0.286)[:, None] / 0.353


def train(X: np.ndarray, y: np.ndarray, steps: int, seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(X), 128)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(X[idx])), torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def evaluate(name: str, model, X_fit, y_fit, val, test) -> dict:
    (Xv, yv), (Xt, yt) = val, test
    head = memstore.ResMem(model, k=max(KS), sigma=1.0).fit(X_fit, y_fit)
    d1 = float(np.median(head.memory_.searcher(head.metric).search(model_outputs(model, Xv)[1], 1)[0]))
    grid = [{"k": row["k"], "sigma_scale": scale, "validation": row["score"]}  # one pass, one search
            for row, scale in zip(head.score_grid(Xv, yv, k=list(KS), sigma=[s * d1 for s in SIGMA_SCALES])
                                  .to_pylist(), SIGMA_SCALES * len(KS))]
    best = max(grid, key=lambda r: (r["validation"], -r["k"]))
    head.set_params(k=best["k"], sigma=best["sigma_scale"] * d1)
    base_test = float((model_outputs(model, Xt)[0].argmax(1) == yt).mean())
    base_val = float((model_outputs(model, Xv)[0].argmax(1) == yv).mean())
    out = {"name": name, "rows": len(X_fit), "median_d1": d1, "grid": grid, "best": best,
           "base": {"validation": base_val, "test": base_test},
           "resmem_test": head.score(Xt, yt), "train_accuracy_base":
               float((model_outputs(model, X_fit)[0].argmax(1) == y_fit).mean())}
    print(name, {k: v for k, v in out.items() if k != "grid"}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    train_all, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    order = np.random.default_rng(0).permutation(len(train_all.images))
    fit_idx, val_idx = order[:50_000], order[50_000:]
    X, y = as_input(train_all.images), train_all.labels
    val, tst = (X[val_idx], y[val_idx]), (as_input(test.images), test.labels)
    steps = int(args.epochs * 50_000 / 128)
    results = []
    for name, rows in (("full (50,000 images)", fit_idx), ("weak (2,000 images)", fit_idx[:2000])):
        t = time.perf_counter()
        model = train(X[rows], y[rows], steps)
        print(f"{name}: trained {steps} steps in {time.perf_counter() - t:.0f} s", flush=True)
        # the memory holds all 50,000 training rows for both: what the weak model did not
        # learn from them, ResMem memorises
        results.append(evaluate(name, model, X[fit_idx], y[fit_idx], val, tst))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "resmem_fashion.json").write_text(json.dumps({"steps": steps, "results": results}, indent=2) + "\n")
    lines = ["# ResMem on Fashion-MNIST", "",
             f"SmallCNN (64-d embedding), {steps} Adam steps of 128 images; k and σ chosen on 10,000 validation "
             "images; test: Fashion-MNIST's 10,000 test images.", "",
             "| base model trained on | memory rows | base acc. on them | k, σ/d1 | base test | ResMem test |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['rows']:,} | {100 * r['train_accuracy_base']:.2f}% | {r['best']['k']}, "
                     f"{r['best']['sigma_scale']} | {100 * r['base']['test']:.2f}% | **{100 * r['resmem_test']:.2f}%** |")
    for r in results:
        lines += ["", f"Validation accuracy, {r['name']} (base {100 * r['base']['validation']:.2f}%; d1 = median "
                      f"distance to the nearest row, {r['median_d1']:.3f}):", "",
                  "| k | " + " | ".join(f"σ={s}·d1" for s in SIGMA_SCALES) + " |",
                  "|---|" + "---|" * len(SIGMA_SCALES)]
        for k in KS:
            cells = [f"{100 * g['validation']:.2f}" for g in r["grid"] if g["k"] == k]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    (RESULTS / "resmem_fashion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

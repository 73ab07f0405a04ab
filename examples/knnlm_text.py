"""kNN-LM on real text: a small GPT-2 trained here, its training text as the datastore.

No pretrained causal LM can be downloaded here, so this script trains one:
a byte-level BPE tokenizer and a GPT-2 configuration of a few million
parameters (transformers), on the training documents of Python's documentation
topics (``memstore.data.load_pydoc_topics``: 79 documents split by document
into train/validation/test). Then:

1. the training text becomes the datastore (``memstore.build_datastore``: the
   input of the last feed-forward block at every position, the next token);
2. perplexity of the base LM and of the kNN-LM for λ in {0.1, 0.25, 0.5},
   k in {8, 64, 256, 1024} and T in {1, 5, 20} on validation; the best
   (λ, k, T) is reported on test;
3. a plot of validation perplexity against λ and k.

The tokenizer and model are cached in examples/cache/knnlm/ (a re-run skips
training). Results: examples/results/knnlm_text.{json,md}, knnlm_text.png.

    python examples/knnlm_text.py [--train-minutes 8]
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
from memstore.data import load_pydoc_topics, train_tokenizer
from memstore.encoders._torchvision import import_torchvision

HERE = Path(__file__).parent
CACHE = HERE / "cache" / "knnlm"
RESULTS = HERE / "results"
LAMBDAS = (0.1, 0.25, 0.5)
KS = (8, 64, 256, 1024)
#: T of exp(-d / T): squared L2 distances of these keys run ~10 (nearest) to ~90 (64th),
#: so T = 1 puts all of p_kNN on the nearest row; larger T spreads it
TEMPERATURES = (1.0, 5.0, 20.0)
CONTEXT = 256


def tokens(tokenizer, docs) -> list[np.ndarray]:
    eos = tokenizer.eos_token_id
    return [np.asarray(tokenizer(d.text)["input_ids"] + [eos], np.int64) for d in docs]


def train(model, docs: list[np.ndarray], val: list[np.ndarray], minutes: float, batch: int = 16, seed: int = 0):
    """AdamW on random CONTEXT-token windows of the training stream; keeps the best validation loss."""
    stream = torch.from_numpy(np.concatenate(docs))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    deadline, step, best, best_state, log = time.time() + 60 * minutes, 0, math.inf, None, []
    while time.time() < deadline:
        starts = torch.randint(0, len(stream) - CONTEXT - 1, (batch,), generator=gen)
        x = torch.stack([stream[s:s + CONTEXT] for s in starts])
        model.train()
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            v = perplexity(model, val)
            log.append({"step": step, "train_loss": round(float(loss.detach()), 3), "val_ppl": round(v, 2)})
            print(log[-1], flush=True)
            if v < best:
                best, best_state = v, {k: t.detach().clone() for k, t in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), log


def perplexity(model, docs) -> float:
    """The base LM's perplexity, windows of CONTEXT tokens (as KNNLM.perplexity with lmbda=0)."""
    model.eval()
    nll, n = 0.0, 0
    with torch.inference_mode():
        for ids in docs:
            for lo in range(0, len(ids) - 1, CONTEXT - 1):
                x = torch.from_numpy(ids[lo:lo + CONTEXT])[None]
                if x.shape[1] < 2:
                    continue
                lp = torch.log_softmax(model(x).logits.double(), -1)[0, :-1]
                nll -= float(lp.gather(1, x[0, 1:, None]).sum())
                n += x.shape[1] - 1
    return math.exp(nll / n)


def load_or_train(train_docs, val_docs, minutes: float):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    if (CACHE / "model.safetensors").exists():
        return PreTrainedTokenizerFast.from_pretrained(CACHE), GPT2LMHeadModel.from_pretrained(CACHE).eval(), None
    tokenizer = train_tokenizer([d.text for d in train_docs], vocab_size=4096)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=256, n_layer=4, n_head=4,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    print(f"GPT-2: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", flush=True)
    model, log = train(model, tokens(tokenizer, train_docs), tokens(tokenizer, val_docs), minutes)
    CACHE.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(CACHE)
    tokenizer.save_pretrained(CACHE)
    (CACHE / "train_log.json").write_text(json.dumps(log, indent=1))
    return tokenizer, model, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-minutes", type=float, default=8.0)
    args = ap.parse_args()
    import_torchvision()  # transformers imports torchvision (DESIGN.md)
    torch.set_num_threads(2)
    train_docs, val_docs, test_docs = (load_pydoc_topics(s) for s in ("train", "validation", "test"))
    tokenizer, model, log = load_or_train(train_docs, val_docs, args.train_minutes)
    tr, va, te = (tokens(tokenizer, d) for d in (train_docs, val_docs, test_docs))
    out = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "tokens": {"train": int(sum(map(len, tr))), "validation": int(sum(map(len, va))),
                      "test": int(sum(map(len, te)))}, "train_log": log}
    with tempfile.TemporaryDirectory() as tmp:
        mem = memstore.open(Path(tmp) / "datastore.mem")
        t = time.perf_counter()
        memstore.build_datastore(mem, model, tr, context=CONTEXT, stride=CONTEXT // 2,
                                 documents=[d.name for d in train_docs], dataset="pydoc-topics")
        out["datastore"] = {"rows": len(mem), "dim": mem.dim, "build_s": round(time.perf_counter() - t, 1)}
        print(out["datastore"], flush=True)
        base = memstore.KNNLM(model, mem, k=8, lmbda=0.0)
        out["base"] = {"validation": base.perplexity(va, context=CONTEXT, stride=CONTEXT // 2),
                       "test": base.perplexity(te, context=CONTEXT, stride=CONTEXT // 2)}
        grid = []
        for temperature in TEMPERATURES:
            for k in KS:
                for lmbda in LAMBDAS:
                    lm = memstore.KNNLM(model, mem, k=k, lmbda=lmbda, temperature=temperature)
                    grid.append({"temperature": temperature, "k": k, "lmbda": lmbda,
                                 "validation": lm.perplexity(va, context=CONTEXT, stride=CONTEXT // 2)})
                    print(grid[-1], flush=True)
        best = min(grid, key=lambda r: r["validation"])
        lm = memstore.KNNLM(model, mem, k=best["k"], lmbda=best["lmbda"], temperature=best["temperature"])
        out.update({"grid": grid, "best": {**best, "test": lm.perplexity(te, context=CONTEXT, stride=CONTEXT // 2)}})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knnlm_text.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# kNN-LM on Python's documentation topics", "",
             f"GPT-2, {out['params_m']}M parameters, trained here; tokens train/validation/test "
             f"{out['tokens']['train']:,} / {out['tokens']['validation']:,} / {out['tokens']['test']:,}; "
             f"datastore {out['datastore']['rows']:,} x {out['datastore']['dim']} (the training text).", "",
             f"Base LM perplexity: validation {out['base']['validation']:.2f}, test {out['base']['test']:.2f}. "
             f"Best on validation: k={best['k']}, λ={best['lmbda']}, T={best['temperature']}: validation "
             f"{best['validation']:.2f}, test **{out['best']['test']:.2f}**.", "",
             "Validation perplexity:", "",
             "| T | k | " + " | ".join(f"λ={x}" for x in LAMBDAS) + " |", "|---|---|" + "---|" * len(LAMBDAS)]
    for temperature in TEMPERATURES:
        for k in KS:
            cells = [f"{r['validation']:.2f}" for r in grid if r["k"] == k and r["temperature"] == temperature]
            lines.append(f"| {temperature:g} | {k} | " + " | ".join(cells) + " |")
    (RESULTS / "knnlm_text.md").write_text("\n".join(lines) + "\n")
    plot(out, RESULTS / "knnlm_text.png")
    print("\n".join(lines))


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    best_t = out["best"]["temperature"]
    for k in KS:
        rows = [r for r in out["grid"] if r["k"] == k and r["temperature"] == best_t]
        ax.plot([r["lmbda"] for r in rows], [r["validation"] for r in rows], "o-", label=f"k={k}, T={best_t:g}")
    ax.axhline(out["base"]["validation"], color="gray", ls="--", label="base LM")
    ax.set_xlabel("λ")
    ax.set_ylabel("validation perplexity")
    ax.set_title("kNN-LM on Python's documentation topics")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

"""kNN-LM on real text: a small GPT-2 trained here on Wikipedia, its training text as the datastore.

No pretrained causal LM can be downloaded here, so this script trains one: a
byte-level BPE tokenizer (8,192 tokens) and a GPT-2 configuration of 5.3M
parameters (transformers), for 12 minutes on the training articles of the
Wikipedia sample in gensim's test data (``memstore.data.load_wikipedia_sample``:
106 articles, split by article, near-duplicates kept on one side). Then:

1. the training articles become the datastore (``memstore.build_datastore``:
   the input of the last feed-forward block at every position, the next token);
2. validation perplexity of the kNN-LM for λ in {0.1, 0.25, 0.5, 0.75, 0.9},
   k in {8, 64, 256, 1024} and T in {1, 3, 10, 30}, all from one search
   (``KNNLM.perplexity_grid``); the best (k, λ, T) and the base LM on test;
3. domain adaptation: news stories (``load_lee_news``), which the LM never
   saw, are added to the memory as a new version; the grid on their validation
   stories, then test, and the same test against the memory before the news
   (``mem.at("wikipedia")``);
4. one prediction's neighbours with the text around them (``KNNLM.explain``);
5. a plot of validation perplexity against λ and k, for both texts.

The tokenizer and model are cached in examples/cache/knnlm-wikipedia/ (a
re-run skips training). Results: examples/results/knnlm_text.{json,md},
knnlm_text.png.

    python examples/knnlm_text.py [--train-minutes 12] [--train-only]
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
from memstore.data import load_lee_news, load_wikipedia_sample, train_tokenizer

HERE = Path(__file__).parent
CACHE = HERE / "cache" / "knnlm-wikipedia"
RESULTS = HERE / "results"
#: the paper's grid, and larger λ for text far from the LM's training data
LAMBDAS = (0.1, 0.25, 0.5, 0.75, 0.9)
KS = (8, 64, 256, 1024)
#: T of exp(-d / T): squared L2 distances of these keys are tens apart, so T = 1 puts nearly
#: all of p_kNN on the nearest row; larger T spreads it (the grid costs one search)
TEMPERATURES = (1.0, 3.0, 10.0, 30.0)
CONTEXT = 256
STRIDE = CONTEXT // 2
VOCAB = 8192


def tokens(tokenizer, docs) -> list[np.ndarray]:
    eos = tokenizer.eos_token_id
    return [np.asarray(tokenizer(d.text)["input_ids"] + [eos], np.int64) for d in docs]


def train(model, docs: list[np.ndarray], val: list[np.ndarray], minutes: float, batch: int = 16, seed: int = 0):
    """AdamW on random CONTEXT-token windows of the training stream; keeps the best validation loss.

    Checkpoints are compared on the first 16,384 validation tokens (a full pass
    would cost as much as 40 training steps).
    """
    val = [np.concatenate(val)[:16384]]
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
        if step % 100 == 0:
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
        log = json.loads((CACHE / "train_log.json").read_text())
        return PreTrainedTokenizerFast.from_pretrained(CACHE), GPT2LMHeadModel.from_pretrained(CACHE).eval(), log
    tokenizer = train_tokenizer([d.text for d in train_docs], vocab_size=VOCAB)
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


def tune_and_test(knnlm, val, test, label: str) -> dict:
    """The grid on validation (one search per position), then the base LM and the best setting on test."""
    grid = knnlm.perplexity_grid(val, k=list(KS), lmbda=[0.0, *LAMBDAS], temperature=list(TEMPERATURES),
                                 context=CONTEXT, stride=STRIDE).to_pylist()
    best = min(grid, key=lambda r: r["perplexity"])
    on_test = knnlm.perplexity_grid(test, k=best["k"], lmbda=[0.0, best["lmbda"]], temperature=best["temperature"],
                                    context=CONTEXT, stride=STRIDE).to_pylist()
    out = {"grid": grid, "best": {"k": best["k"], "lmbda": best["lmbda"], "temperature": best["temperature"],
                                  "validation": best["perplexity"], "test": on_test[1]["perplexity"]},
           "base": {"validation": grid[0]["perplexity"], "test": on_test[0]["perplexity"]},
           "tokens": {"validation": grid[0]["tokens"], "test": on_test[0]["tokens"]}}
    print(label, json.dumps({"base": out["base"], "best": out["best"]}), flush=True)
    return out


def distance_quantiles(knnlm, docs: list[np.ndarray]) -> dict:
    """Squared L2 distance of the 1st, 8th, 64th and 1024th neighbour (medians): the scale T works on."""
    x = torch.from_numpy(np.concatenate(docs)[:CONTEXT])[None]
    _, keys = knnlm.keyed(x)
    dist, _ = knnlm.search(keys[0], max(KS))
    return {f"d{k}": round(float(dist[:, k - 1].median()), 2) for k in (1, 8, 64, 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-minutes", type=float, default=12.0)
    ap.add_argument("--train-only", action="store_true", help="train and cache the LM, then stop")
    args = ap.parse_args()
    torch.set_num_threads(2)
    wiki = {s: load_wikipedia_sample(s) for s in ("train", "validation", "test")}
    lee = {s: load_lee_news(s) for s in ("train", "validation", "test")}
    tokenizer, model, log = load_or_train(wiki["train"], wiki["validation"], args.train_minutes)
    if args.train_only:
        return
    wiki_ids = {s: tokens(tokenizer, d) for s, d in wiki.items()}
    lee_ids = {s: tokens(tokenizer, d) for s, d in lee.items()}
    out = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "train_log": log,
           "tokens": {f"{c}/{s}": int(sum(map(len, ids[s]))) for c, ids in (("wikipedia", wiki_ids), ("lee", lee_ids))
                      for s in ids}}
    with tempfile.TemporaryDirectory() as tmp:
        mem = memstore.open(Path(tmp) / "datastore.mem")
        t = time.perf_counter()
        memstore.build_datastore(mem, model, wiki_ids["train"], context=CONTEXT, stride=STRIDE,
                                 documents=[d.name for d in wiki["train"]], dataset="wikipedia")
        out["datastore"] = {"rows": len(mem), "dim": mem.dim, "build_s": round(time.perf_counter() - t, 1)}
        mem.tag("wikipedia")
        print(out["datastore"], flush=True)
        knnlm = memstore.KNNLM(model, mem, k=max(KS))
        out["distances"] = distance_quantiles(knnlm, wiki_ids["validation"])
        print("distances", out["distances"], flush=True)
        out["wikipedia"] = tune_and_test(knnlm, wiki_ids["validation"], wiki_ids["test"], "wikipedia")

        # domain adaptation: the LM never saw news; add Lee's training stories to the memory (a new version)
        memstore.build_datastore(mem, model, lee_ids["train"], context=CONTEXT, stride=STRIDE,
                                 documents=[d.name for d in lee["train"]], dataset="lee")
        out["datastore"]["rows_with_lee"] = len(mem)
        out["lee"] = tune_and_test(memstore.KNNLM(model, mem, k=max(KS)), lee_ids["validation"], lee_ids["test"],
                                   "lee, wikipedia + lee datastore")
        # the same news test text, read against the memory as it was before the news were added
        before = memstore.KNNLM(model, mem.at("wikipedia"), k=out["lee"]["best"]["k"], lmbda=out["lee"]["best"]["lmbda"],
                                temperature=out["lee"]["best"]["temperature"])
        out["lee"]["test_wikipedia_datastore"] = before.perplexity(lee_ids["test"], context=CONTEXT, stride=STRIDE)
        example = lee_ids["test"][0][:40]
        table = memstore.KNNLM(model, mem, k=4, lmbda=out["lee"]["best"]["lmbda"],
                               temperature=out["lee"]["best"]["temperature"]).explain(example, tokenizer=tokenizer)
        out["explain"] = {"text": tokenizer.decode(example), "rows": table.drop_columns(
            ["context_ids", "continuation_ids"]).to_pylist()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knnlm_text.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (RESULTS / "knnlm_text.md").write_text(report(out))
    plot(out, RESULTS / "knnlm_text.png")
    print(report(out))


def report(out: dict) -> str:
    w, n = out["wikipedia"], out["lee"]
    tok = out["tokens"]
    lines = [
        "# kNN-LM on Wikipedia, and on news it never saw", "",
        f"GPT-2, {out['params_m']}M parameters, trained here for {out['train_log'][-1]['step']} steps of "
        f"16 x {CONTEXT} tokens on the training articles (validation perplexity at the end of training "
        f"{out['train_log'][-1]['val_ppl']}, on its first 16,384 tokens). Tokens: Wikipedia train/validation/test {tok['wikipedia/train']:,} / "
        f"{tok['wikipedia/validation']:,} / {tok['wikipedia/test']:,}; Lee news {tok['lee/train']:,} / "
        f"{tok['lee/validation']:,} / {tok['lee/test']:,}. Datastore: {out['datastore']['rows']:,} x "
        f"{out['datastore']['dim']} (the training articles, built in {out['datastore']['build_s']} s), then "
        f"{out['datastore']['rows_with_lee']:,} with Lee's training stories. Median squared L2 distance of the "
        f"1st/8th/64th/1024th neighbour: {' / '.join(str(v) for v in out['distances'].values())}.", "",
        "| text | datastore | k, λ, T chosen on validation | base LM validation | kNN-LM validation "
        "| base LM test | kNN-LM test |", "|---|---|---|---|---|---|---|",
        f"| Wikipedia | Wikipedia train | {w['best']['k']}, {w['best']['lmbda']}, {w['best']['temperature']:g} "
        f"| {w['base']['validation']:.2f} | {w['best']['validation']:.2f} | {w['base']['test']:.2f} "
        f"| **{w['best']['test']:.2f}** |",
        f"| Lee news | Wikipedia train + Lee train | {n['best']['k']}, {n['best']['lmbda']}, "
        f"{n['best']['temperature']:g} | {n['base']['validation']:.2f} | {n['best']['validation']:.2f} "
        f"| {n['base']['test']:.2f} | **{n['best']['test']:.2f}** |",
        f"| Lee news | Wikipedia train only (`mem.at(\"wikipedia\")`) | same | | | {n['base']['test']:.2f} "
        f"| {n['test_wikipedia_datastore']:.2f} |", ""]
    for name, res in (("Wikipedia", w), ("Lee news", n)):
        t = res["best"]["temperature"]
        lines += [f"{name} validation perplexity at T={t:g} (λ=0: {res['base']['validation']:.2f}):", "",
                  "| k | " + " | ".join(f"λ={x}" for x in LAMBDAS) + " |", "|---|" + "---|" * len(LAMBDAS)]
        for k in KS:
            cells = [f"{r['perplexity']:.2f}" for r in res["grid"]
                     if r["k"] == k and r["temperature"] == t and r["lmbda"] > 0]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    ex = out["explain"]
    lines += [f"Attribution, Lee test text `{ex['text'][-60:]!r}`: the 4 nearest rows", "",
              "| rank | document | position | context | value | share |", "|---|---|---|---|---|---|"]
    for r in ex["rows"]:
        lines.append(f"| {r['rank']} | {r['document']} | {r['position']} | `{r['context']!r}` "
                     f"| `{r['continuation'][:20]!r}` | {r['share']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name, res in ((axes[0], "Wikipedia (in domain)", out["wikipedia"]),
                          (axes[1], "Lee news (domain adaptation)", out["lee"])):
        t = res["best"]["temperature"]
        for k in KS:
            rows = [r for r in res["grid"] if r["k"] == k and r["temperature"] == t]
            ax.plot([r["lmbda"] for r in rows], [r["perplexity"] for r in rows], "o-", label=f"k={k}")
        ax.axhline(res["base"]["validation"], color="gray", ls="--", label="base LM")
        ax.set_xlabel(f"λ (T={t:g})")
        ax.set_ylabel("validation perplexity")
        ax.set_title(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

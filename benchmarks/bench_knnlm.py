"""kNN-LM evaluation speed with a 1,000,000-entry datastore: memstore exact and indexed, faiss IVFPQ, base LM.

The LM is the 5.3M-parameter GPT-2 that ``examples/knnlm_text.py`` trains on
Wikipedia (cached in examples/cache/knnlm-wikipedia/; trained here first if
missing). The datastore is its keys (input of the last feed-forward block,
256-d) over the Wikipedia training articles, then over the source of Python's
standard library until it holds exactly --rows entries: one memory built with
``memstore.build_datastore``.

The same held-out Wikipedia text (--eval-tokens tokens of the test articles,
windows of 256 tokens moved by 128) is then scored, one method after another,
with the same k, λ and T:

* base LM: the model alone (λ = 0, no search);
* memstore exact: ``KNNLM(index="exact")``, every distance computed;
* memstore IVF in RAM: ``KNNLM(index="ivf")``, exact distances over the
  nearest partitions (:mod:`memstore.ivf_search`), nprobes tuned to
  recall@k 0.95;
* memstore LanceDB IVF_PQ: ``mem.create_index("IVF_PQ", metric="l2")`` with
  the paper's quantiser shape (1024 partitions for 1M keys, 64 sub-vectors),
  tuned by memstore to its recall target, candidates re-ranked exactly by Lance;
* faiss IVFPQ: the original kNN-LM datastore design (Khandelwal et al. 2020),
  ``faiss.IndexIVFPQ`` over the same keys, 1024 lists, 64 x 8-bit codes,
  nprobe 32, quantised distances, in the same KNNLM (only the search differs).

Reported per method: tokens/s of the whole evaluation (LM forward passes
included), the time spent searching, perplexity, and the slowdown against the
base LM. Index build times are reported apart.

    python benchmarks/bench_knnlm.py                       # 1,000,000 entries (~25 min)
    python benchmarks/bench_knnlm.py --rows 200000 --eval-tokens 4096   # quicker

Writes benchmarks/results/knnlm-<rows>.json and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import memstore
from bench_store import write_results

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CONTEXT, STRIDE = 256, 128


def load_example():
    """examples/knnlm_text.py as a module: its LM, tokenizer and helpers."""
    spec = importlib.util.spec_from_file_location("knnlm_text", HERE.parent / "examples" / "knnlm_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stdlib_documents():
    """The source files of Python's standard library, sorted by path: filler text for a large datastore."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            yield f"stdlib/{path.relative_to(root)}", path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def build(mem, example, model, tokenizer, rows: int) -> dict:
    """Wikipedia's training articles, then standard library source, until the memory holds ``rows`` keys."""
    from memstore.data import load_wikipedia_sample

    t = time.perf_counter()
    docs = load_wikipedia_sample("train")
    wiki = example.tokens(tokenizer, docs)
    names, ids, total = [d.name for d in docs], list(wiki), sum(len(x) - 1 for x in wiki)
    for name, text in stdlib_documents():
        if total >= rows:
            break
        x = np.asarray(tokenizer(text)["input_ids"] + [tokenizer.eos_token_id], np.int64)
        names.append(name)
        ids.append(x)
        total += len(x) - 1
    excess = total - rows
    if excess > 0:
        ids[-1] = ids[-1][:len(ids[-1]) - excess]
    memstore.build_datastore(mem, model, ids, context=CONTEXT, stride=STRIDE, documents=names,
                             dataset="wikipedia+stdlib", progress=True)
    return {"rows": len(mem), "wikipedia_rows": int(sum(len(x) - 1 for x in wiki)),
            "build_s": round(time.perf_counter() - t, 1)}


class FaissIVFPQ:
    """The paper's datastore: faiss IndexIVFPQ, approximate (quantised) squared L2 distances."""

    def __init__(self, vectors: np.ndarray, nlist: int, m: int, nprobe: int, train_rows: int, seed: int = 0):
        import faiss

        dim = vectors.shape[1]
        t = time.perf_counter()
        self.index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, nlist, m, 8)
        sample = np.random.default_rng(seed).choice(len(vectors), min(train_rows, len(vectors)), replace=False)
        self.index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        self.index.add(vectors)
        self.index.nprobe = nprobe
        self.build_s = time.perf_counter() - t

    def search(self, queries: np.ndarray, k: int):
        return self.index.search(np.ascontiguousarray(queries, np.float32), k)


class TimedSearch:
    """Wraps a searcher and adds up the seconds spent in it."""

    def __init__(self, searcher):
        self.searcher, self.seconds = searcher, 0.0

    def search(self, queries, k: int):
        t = time.perf_counter()
        try:
            return self.searcher.search(queries, k)
        finally:
            self.seconds += time.perf_counter() - t


def evaluate(knnlm, text, name: str, base_s: float | None) -> dict:
    timed = TimedSearch(knnlm.searcher)
    knnlm.searcher = timed
    t = time.perf_counter()
    ppl = knnlm.perplexity(text, context=CONTEXT, stride=STRIDE, progress=False)
    seconds = time.perf_counter() - t
    tokens = sum(len(x) - 1 for x in text)
    row = {"method": name, "perplexity": round(ppl, 3), "seconds": round(seconds, 2),
           "search_s": round(timed.seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
           "slowdown_vs_base": None if base_s is None else round(seconds / base_s, 2)}
    print(row, flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--k", type=int, default=1024, help="neighbours (the paper's 1024)")
    # λ and T as chosen on Wikipedia validation text by examples/knnlm_text.py (at k = 1024)
    ap.add_argument("--lmbda", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=10.0)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=32, help="faiss lists probed (the paper's 32)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the datastore here between runs")
    args = ap.parse_args(argv)

    example = load_example()
    torch.set_num_threads(2)
    from memstore.data import load_wikipedia_sample

    tokenizer, model, _ = example.load_or_train(load_wikipedia_sample("train"), load_wikipedia_sample("validation"),
                                                minutes=12.0)
    test = example.tokens(tokenizer, load_wikipedia_sample("test"))
    text, left = [], args.eval_tokens + 1
    for x in test:
        if left <= 1:
            break
        text.append(x[:left])
        left -= len(text[-1])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-knnlm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mem = memstore.open(workdir / f"datastore-{args.rows}.mem")
    out = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "cpu_threads": torch.get_num_threads()},
           "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    built = workdir / f"datastore-{args.rows}.json"  # how the kept datastore was built
    if len(mem) != args.rows:
        if len(mem):
            raise SystemExit(f"{mem.path} holds {len(mem)} rows, not {args.rows}: clear --workdir")
        built.write_text(json.dumps(build(mem, example, model, tokenizer, args.rows)))
    out["datastore"] = {**(json.loads(built.read_text()) if built.exists() else {}), "rows": len(mem), "dim": mem.dim}
    print(out["datastore"], flush=True)
    knobs = {"k": args.k, "lmbda": args.lmbda, "temperature": args.temperature}

    rows = [evaluate(memstore.KNNLM(model, mem, **{**knobs, "lmbda": 0.0}, index="exact"), text, "base LM", None)]
    base_s = rows[0]["seconds"]
    rows.append(evaluate(memstore.KNNLM(model, mem, **knobs, index="exact"), text, "memstore exact", base_s))

    knnlm = memstore.KNNLM(model, mem, **knobs, index="ivf")
    ivf = knnlm.searcher
    out["memstore_ivf"] = {"build_s": round(ivf.build_seconds, 1), "nlist": ivf.nlist, "nprobes": ivf.nprobes,
                           f"recall@{args.k}": round(ivf.recall, 3)}
    print(out["memstore_ivf"], flush=True)
    rows.append(evaluate(knnlm, text, "memstore IVF in RAM (index='ivf')", base_s))

    info = mem.index_info()
    if info is None or info["metric"] != "l2":  # a --workdir run keeps the index of the last one
        mem.create_index("IVF_PQ", metric="l2", num_partitions=args.nlist, num_sub_vectors=64, k=64)
        info = mem.index_info()
    out["memstore_index"] = {"build_s": round(info["build_seconds"], 1), "nprobes": info["nprobes"],
                             "refine_factor": info["refine_factor"], "recall@64": round(info["recall"], 3)}
    print(out["memstore_index"], flush=True)
    rows.append(evaluate(memstore.KNNLM(model, mem, **knobs, index="ann"), text, "memstore LanceDB IVF_PQ (index='ann')",
                         base_s))

    vectors = mem.samples.vectors
    faiss_index = FaissIVFPQ(vectors, args.nlist, 64, args.nprobe, train_rows=256 * args.nlist)
    out["faiss_index"] = {"build_s": round(faiss_index.build_s, 1), "nlist": args.nlist, "m": 64,
                          "nprobe": args.nprobe}
    print(out["faiss_index"], flush=True)
    knnlm = memstore.KNNLM(model, mem, **knobs, index="exact")
    knnlm.searcher = faiss_index
    rows.append(evaluate(knnlm, text, "faiss IndexIVFPQ (paper)", base_s))
    out["results"] = rows
    out["eval_tokens"] = sum(len(x) - 1 for x in text)

    write_results(RESULTS / f"knnlm-{args.rows}", out, markdown)
    print(markdown(out))
    return out


def markdown(out: dict) -> str:
    ds, c = out["datastore"], out["config"]
    faiss_row = next(r for r in out["results"] if r["method"].startswith("faiss"))
    lines = [f"# kNN-LM evaluation, {ds['rows']:,}-entry datastore x {ds['dim']}", "",
             f"{out['eval_tokens']:,} held-out Wikipedia tokens, windows of {CONTEXT} moved by {STRIDE}; "
             f"k={c['k']}, λ={c['lmbda']}, T={c['temperature']}; {out['machine']['cpu_threads']} CPU threads.", "",
             "| method | perplexity | tokens/s | search s | slowdown vs base LM | faiss's time / this one's |",
             "|---|---|---|---|---|---|"]
    for r in out["results"]:
        ratio = faiss_row["seconds"] / r["seconds"]
        slow = "1" if r["slowdown_vs_base"] is None else f"{r['slowdown_vs_base']}x"
        lines.append(f"| {r['method']} | {r['perplexity']:.2f} | {r['tokens_per_s']:,.0f} | {r['search_s']} "
                     f"| {slow} | {ratio:.2f}x |")
    mi, fi, ri = out["memstore_index"], out["faiss_index"], out["memstore_ivf"]
    recall_key = next(k for k in ri if k.startswith("recall@"))
    lines += ["", f"Index builds: memstore IVF in RAM {ri['build_s']} s (nlist {ri['nlist']}, tuned to nprobes "
                  f"{ri['nprobes']}: {recall_key} {ri[recall_key]} on 200 datastore rows); LanceDB IVF_PQ "
                  f"{mi['build_s']} s (tuned: nprobes {mi['nprobes']}, refine {mi['refine_factor']}, recall@64 "
                  f"{mi['recall@64']}); faiss IVFPQ {fi['build_s']} s (nlist {fi['nlist']}, {fi['m']} x 8-bit "
                  f"codes, nprobe {fi['nprobe']})."]
    if "build_s" in ds:
        lines.append(f"Datastore: {ds['rows']:,} keys ({ds['wikipedia_rows']:,} from Wikipedia's training "
                     f"articles, the rest from Python's standard library source) in {ds['build_s']} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Write the README's measured figures from the results files, so that they cannot drift.

Each generated part of README.md sits between two marks::

    <!-- figures:store -->
    | measure | memstore | ... |
    <!-- /figures -->

and is rebuilt here from ``benchmarks/results/*.json`` and ``examples/results/*.json``
(one function per mark, in :data:`BLOCKS`). Prose that is mostly figures is generated
too; the prose around the marks is written by hand.

    python benchmarks/readme_figures.py           # rewrite README.md
    python benchmarks/readme_figures.py --check   # exit 1, naming each stale block

Only the standard library is used: the check runs in the test suite without loading
memstore, torch or LanceDB.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH = ROOT / "benchmarks" / "results"
EXAMPLES = ROOT / "examples" / "results"

MARK = re.compile(r"<!-- figures:(?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- /figures -->", re.S)


# -- helpers ------------------------------------------------------------------------------
def load(path: Path) -> dict:
    return json.loads(path.read_text())


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def code_constant(module: Path, name: str):
    """The literal value assigned to ``name`` at the top level of ``module``, read without importing it.

    The README states what the code does; importing memstore here would load LanceDB.
    """
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} is not assigned in {module}")


def binomial_se(percent: float, n: int) -> float:
    """Standard error, in points, of an accuracy measured on n independent images."""
    p = percent / 100
    return 100 * math.sqrt(p * (1 - p) / n)


def wrap(text: str, bullet: bool = False) -> str:
    """One paragraph (or list item) wrapped at 80 columns, never inside a word or a number ("5-9")."""
    return textwrap.fill(" ".join(text.split()), width=80, initial_indent="- " if bullet else "",
                         subsequent_indent="  " if bullet else "", break_long_words=False,
                         break_on_hyphens=False)


def ratio_range(values: list[float]) -> str:
    """'1.1-1.3x' (or '1.2x' when both ends round alike)."""
    lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
    return f"{lo}x" if lo == hi else f"{lo}-{hi}x"


# -- the store --------------------------------------------------------------------------
def store() -> str:
    """The table of benchmarks/bench_store.py, as its Markdown file has it."""
    r = load(BENCH / "store-1000000x512.json")
    mb = 1e6
    rows = [
        ["add (rows/s)", f"{r['add_memstore_rows_per_s']:,.0f}", f"lancedb add {r['add_lancedb_rows_per_s']:,.0f}",
         f"{r['add_ratio']:.2f}x", ">= 0.8x"],
        ["sql group-by (ms)", f"{r['sql_memstore_s'] * 1e3:.1f} (cold {r['sql_memstore_cold_s'] * 1e3:.0f})",
         f"duckdb/arrow {r['sql_duckdb_arrow_s'] * 1e3:.1f}", f"{r['sql_ratio']:.2f}x", "<= 2x"],
        ["sql on provenance (ms)", f"{r['sql_provenance_memstore_s'] * 1e3:.1f}",
         f"duckdb/arrow {r['sql_provenance_duckdb_arrow_s'] * 1e3:.1f}",
         f"{r['sql_provenance_memstore_s'] / r['sql_provenance_duckdb_arrow_s']:.2f}x", ""],
        ["open (ms)", f"{r['open_s'] * 1e3:.0f}", "", "", "< 1000"],
        ["disk (bytes/row)", f"{r['disk_bytes_per_row']:.0f}", f"vectors {r['dim'] * 4}",
         f"{r['disk_ratio_to_vectors']:.3f}x", "<= 1.15x + metadata"],
        ["reweight all (s, growth)", f"{r['reweight_all_s']:.1f}, +{r['reweight_growth_bytes'] / mb:.0f} MB",
         f"lancedb update {r['reweight_all_lancedb_update_s']:.1f}, "
         f"+{r['reweight_lancedb_update_growth_bytes'] / mb:.0f} MB",
         f"{r['reweight_growth_pct_of_vectors']:.2f}% of vectors", "< 5%"],
        ["relabel all (s, growth)", f"{r['relabel_all_s']:.1f}, +{r['relabel_growth_bytes'] / mb:.0f} MB", "",
         f"{r['relabel_growth_pct_of_vectors']:.2f}% of vectors", "< 5%"],
    ]
    return table(["measure", "memstore", "peer", "ratio", "goal"], rows)


# -- visual memory ------------------------------------------------------------------------
#: examples/fashion_knn.py's feature names, with the dimension the README gives them
FEATURES = {"EfficientNet-Lite0": "EfficientNet-Lite0 (1280-d)", "raw pixels": "raw pixels (784-d)"}


def fashion_knn() -> str:
    """Accuracy by k and voting, then memory size and the ANN index, from fashion_knn.json."""
    r = load(EXAMPLES / "fashion_knn.json")
    rows = []
    for name, label in FEATURES.items():
        by_k = {g["k"]: g for g in r["grid"][name]}
        rows.append([label] + [f"{by_k[k][v]:.2f}" for k, v in
                               ((1, "rank"), (10, "rank"), (50, "rank"), (100, "rank"), (100, "plurality"),
                                (10, "sklearn"))])
    head = ["features", "k=1", "k=10 rank", "k=50 rank", "k=100 rank", "k=100 plurality", "scikit-learn k=10"]
    agree = min(g["agree_no_tie"] for grid in r["grid"].values() for g in grid)
    where = "every test image" if agree == 100 else f"{agree}% of the test images"
    size = {name: (s[0], s[-1]) for name, s in r["size"].items()}
    (first, last), (pfirst, plast) = size["EfficientNet-Lite0"], size["raw pixels"]
    ann = r["ann"]
    text = (f"scikit-learn's KNeighborsClassifier agrees with our plurality voting on {where} "
            f"where its vote has no tie. Growing the memory from {first['rows'] // 1000}k to "
            f"{last['rows'] // 1000}k rows (one add each, read back with `mem.at(version)`) lowers the error "
            f"from {100 - first['accuracy']:.1f}% to {100 - last['accuracy']:.1f}% (EfficientNet-Lite0) and "
            f"{100 - pfirst['accuracy']:.1f}% to {100 - plast['accuracy']:.1f}% (pixels): "
            f"`examples/results/fashion_knn_memory_size.png`. Through the {ann['index']['index_type']} index "
            f"(recall@10 {ann['index']['recall']}) the kNN accuracy is {ann['ann']['accuracy']:.2f}% against "
            f"{ann['exact']['accuracy']:.2f}% exact.")
    return table(head, rows) + "\n\n" + wrap(text)


# -- search speed -----------------------------------------------------------------------
SEARCH = BENCH / "search-100000_1000000x512_1280.json"
#: the README's rows: the 1M-row data sets (single 1280-d queries left out for width)
SEARCH_ROWS = [(1_000_000, 512, 1), (1_000_000, 512, 64), (1_000_000, 512, 1024),
               (1_000_000, 1280, 64), (1_000_000, 1280, 1024)]


def _ms(batch: dict) -> str:
    value = f"{batch['s'] * 1e3:,.0f}"
    return "~" + value if "extrapolated_from" in batch else value


def _exact(r: dict) -> dict:
    return {(e["rows"], e["dim"]): e for e in r["exact"]}


def _peak(e: dict) -> float:
    return max(e["matmul"]["torch_gflops"], e["matmul"]["numpy_gflops"])


def search_exact() -> str:
    """Exact search, ms per batch, against numpy, faiss and LanceDB; then the ratios the prose cites."""
    r = load(SEARCH)
    exact = _exact(r)
    rows = []
    for n, dim, b in SEARCH_ROWS:
        e, key = exact[(n, dim)], str(b)
        m = e["methods"]
        rows.append([f"{n // 1_000_000}M x {dim}", f"{b}", _ms(m["memstore"]["batches"][key]),
                     f"{100 * m['memstore']['batches'][key]['gflops'] / _peak(e):.0f}%",
                     _ms(m["numpy"]["batches"][key]), _ms(m["faiss"]["batches"][key]),
                     _ms(m["lancedb"]["batches"][key])])
    peaks = [_peak(e) for e in r["exact"]]
    blas = [e["matmul"]["numpy_gflops"] / e["matmul"]["torch_gflops"] for e in r["exact"]]
    big = [e for e in r["exact"] if e["rows"] == r["ann_rows"]]

    def ratio(e, peer, b):  # the peer's time over memstore's
        return e["methods"][peer]["batches"][b]["s"] / e["methods"]["memstore"]["batches"][b]["s"]

    faiss_ahead = {e["dim"]: 1 / ratio(e, "faiss", "1024") for e in big}
    intro = (f"Exact search, ms per batch, and memstore's share of the machine's matmul rate "
             f"(the faster of torch's MKL and numpy's OpenBLAS on a 4096^3 matmul, "
             f"{min(peaks):.0f}-{max(peaks):.0f} GFLOP/s):")
    head = ["data", "batch", "memstore", "% matmul", "numpy", "faiss IndexFlatIP", "LanceDB brute force"]
    text = (f"On the CPU the scores come from numpy's OpenBLAS ({ratio_range(blas)} torch's MKL on this "
            f"AMD EPYC) in cache-sized steps, and torch runs the selection on one thread. "
            f"For batches of 64 memstore is {ratio_range([ratio(e, 'numpy', '64') for e in big])} faster "
            f"than numpy and {ratio_range([ratio(e, 'faiss', '64') for e in big])} faster than "
            f"faiss; for batches of 1,024 faiss, whose own OpenBLAS build runs its sgemm "
            f"faster here, is {ratio_range([1 / ratio(e, 'faiss', '1024') for e in r['exact']])} faster "
            f"({faiss_ahead[512]:.2f}x at 1M x 512, {faiss_ahead[1280]:.2f}x at 1M x 1280). "
            f"Single queries are bound by memory bandwidth and run level with numpy.")
    return wrap(intro) + "\n\n" + table(head, rows) + "\n\n" + wrap(text)


def search_index() -> str:
    """Indexed search at 1M x 512, and from how many rows ``index="auto"`` uses the index.

    The row count is the code's (``memstore.index.ANN_AUTO_ROWS``), the timings the JSON's.
    """
    r = load(SEARCH)
    clustered, gaussian = r["ann"]["clustered"]["indexes"], r["ann"]["gaussian"]["indexes"]
    pq, hnsw = clustered["IVF_PQ"], clustered["IVF_HNSW_SQ"]
    exact_batch = r["ann"]["clustered"]["exact"]["batches"]
    batch_n = max(int(b) for b in exact_batch)
    exact_per_query = exact_batch[str(batch_n)]["s"] * 1e3 / batch_n
    auto_rows = code_constant(ROOT / "memstore" / "index.py", "ANN_AUTO_ROWS")
    small = _exact(r)[(min(e["rows"] for e in r["exact"]), 512)]
    return wrap(
        f"Indexed search, {pq['rows'] // 1_000_000}M x 512, `mem.create_index` tuned to recall@10 >= "
        f"{pq['target_recall']} on the memory's own rows, then measured on held-out queries: on clustered "
        f"data shaped like embeddings IVF_PQ reaches recall@10 {pq['heldout_recall']:.3f} at "
        f"{pq['single_ms']:.1f} ms a query, {pq['speedup_vs_exact_single']:.1f}x exact single-query search "
        f"(IVF_HNSW_SQ: {hnsw['heldout_recall']:.3f} at {hnsw['speedup_vs_exact_single']:.1f}x); built in "
        f"{pq['build_seconds']:.0f} s. In batches of {batch_n:,} queries IVF_PQ takes "
        f"{pq['batch_ms_per_query']:.1f} ms a query against {exact_per_query:.1f} ms exact. On Gaussian noise "
        f"no setting on the schedule gets past recall@10 {gaussian['IVF_PQ']['heldout_recall']:.2f} (IVF_PQ) "
        f"or {gaussian['IVF_HNSW_SQ']['heldout_recall']:.2f} (IVF_HNSW_SQ) on held-out queries (reported, "
        f"not hidden). `index=\"auto\"` uses the index from `memstore.index.ANN_AUTO_ROWS` = "
        f"{auto_rows:,} rows on. The benchmark built indexes at {pq['rows']:,} rows only, so where "
        f"exact search starts to lose is not measured; at {small['rows']:,} x 512 exact search takes "
        f"{small['methods']['memstore']['batches']['1']['s'] * 1e3:.1f} ms a single query.")


# -- flexible memory ------------------------------------------------------------------------
def _gain(before: float, after: float, n: int, paired_se: float | None) -> tuple[str, float]:
    """'+0.16 ± 0.45' and the gain in standard errors.

    Without a paired standard error the two accuracies' binomial errors are combined
    as if independent; on the same test images that overstates the error of the gain.
    """
    se = paired_se if paired_se is not None else math.hypot(binomial_se(before, n), binomial_se(after, n))
    gain = after - before
    return f"{gain:+.2f} ± {se:.2f}", gain / se


def _pruning(runs: list[dict], n: int) -> str:
    clean, noisy = runs
    gains = [[_gain(p["test_before"], p[f"{kind}_test"], n, p.get(f"{kind}_gain_se")) for kind in ("hard", "soft")]
             for p in runs]
    largest = max(z for pair in gains for _, z in pair)
    if all("hard_gain_se" in p and "soft_gain_se" in p for p in runs):
        how = f"paired, over the same {n:,} test images"
    else:
        how = (f"binomial, of two accuracies on {n:,} test images taken as independent (the results "
               f"hold no per-image outcomes, so the paired error is not known)")
    return wrap(
        f"**Pruning by quality** (wrong-neighbour counts at k=100, threshold chosen on validation): clean "
        f"labels, test {clean['test_before']:.2f}% → {clean['hard_test']:.2f}% hard ({gains[0][0][0]}; "
        f"{clean['hard_pruned']:,} rows with wrong_count >= {clean['hard_threshold']} pruned), "
        f"{clean['soft_test']:.2f}% soft ({gains[0][1][0]}; SoftRankVoting weights). With "
        f"{noisy['noise']:.0%} of the memory's labels flipped (flipped rows score "
        f"{noisy['mean_count_flipped']} on average, others {noisy['mean_count_clean']}): "
        f"{noisy['test_before']:.2f}% → {noisy['hard_test']:.2f}% hard ({gains[1][0][0]}; "
        f"{noisy['hard_pruned']:,} rows), {noisy['soft_test']:.2f}% soft ({gains[1][1][0]}). Gains are in "
        f"points ± their standard error, {how}; the largest is {largest:.1f} standard errors. Pruning deeper "
        f"(threshold 10-80, thousands of rows) lowers validation accuracy here.", bullet=True)


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def flexible() -> str:
    """The four findings of examples/flexible_memory.py."""
    r = load(EXAMPLES / "flexible_memory.json")
    lf, fg, gr = r["lifelong"], r["forget"], r["granularity"]
    steps = " → ".join(f"{s['fine']:.1f}".removesuffix(".0") for s in gr["refine"])
    as_digit = "no Fashion image" if lf["fashion_predicted_as_digit"] == 0 else \
        f"{lf['fashion_predicted_as_digit']}% of Fashion images"
    fashion = "unchanged" if lf["fashion_after_digits"] == lf["fashion_before_digits"] else \
        f"{lf['fashion_before_digits']:.2f}% before, now"
    same = "identical to" if fg["identical_probabilities"] else "that differ from"
    lifelong = wrap(
        f"**New classes without training.** A memory without Ankle boot and Bag: "
        f"{lf['old_classes_before']:.2f}% (± {lf['old_stderr']:.2f}) on the old classes. Adding the two "
        f"classes in one `add` gives {lf['new_classes_after']:.2f}% on them, and {lf['old_classes_after']:.2f}% "
        f"on the old ones: {lf['old_broken']} of {lf['old_queries']:,} old-class images changed from right to "
        f"wrong, {lf['old_broken_to_new']} of them to a new class (sneakers now called ankle boots); the old "
        f"rows did not change. scikit-learn's digits, encoded by the same network, as ten more classes: "
        f"{lf['digits_after']:.2f}% on held-out digits, and Fashion-MNIST accuracy {fashion} "
        f"({lf['fashion_after_digits']:.2f}%; {as_digit} predicted as a digit).", bullet=True)
    forgetting = wrap(
        f"**Forgetting.** {fg['rows']} of {fg['rows_in_version_1'] + fg['rows']:,} rows forgotten in "
        f"{sum(fg['seconds'].values()):.1f} s including the byte scan of {fg['bytes_scanned'] / 1e6:.0f} MB; "
        f"a head fitted afterwards gives probabilities {same} a memory that never held them. At 1M and "
        f"10M rows: \"Forget at scale\" below.", bullet=True)
    granularity = wrap(
        f"**Label granularity** (our grouping: tops, dresses, bottoms, footwear, bags): "
        f"{gr['coarse_at_level_0']:.1f}% at the coarse level, {gr['fine_at_level_1']:.2f}% fine. Starting from "
        f"coarse labels only and relabelling one group at a time by SQL, fine accuracy climbs {steps}% while "
        f"coarse accuracy stays at {gr['refine'][-1]['coarse']:.1f}% "
        f"(`examples/results/flexible_memory_refine.png`).", bullet=True)
    n_test = lf["old_queries"] + lf["new_queries"]
    return "\n".join([lifelong, forgetting, _pruning(r["pruning"], n_test), granularity])


# -- kNN-LM --------------------------------------------------------------------------------
def _perplexity(base: float, knn: float, bold: bool) -> str:
    """'**331.1** (-24%)': the kNN-LM's perplexity and its change from the base LM's."""
    value = f"**{knn:.1f}**" if bold else f"{knn:.1f}"
    return f"{value} ({100 * (knn / base - 1):+.0f}%)"


def knnlm_text() -> str:
    """Perplexity of the base LM and the kNN-LM on Wikipedia and on Lee's news, from knnlm_text.json."""
    r = load(EXAMPLES / "knnlm_text.json")
    wiki, lee, ds = r["wikipedia"], r["lee"], r["datastore"]

    def knobs(best):
        return f"{best['k']}, {best['lmbda']:g}, {best['temperature']:g}"

    rows = [
        ["Wikipedia", f"Wikipedia train ({ds['rows'] / 1000:.0f}k)", knobs(wiki["best"]),
         f"{wiki['base']['test']:.1f}", _perplexity(wiki["base"]["test"], wiki["best"]["test"], True)],
        ["Lee news", f"+ Lee train ({ds['rows_with_lee'] / 1000:.0f}k)", knobs(lee["best"]),
         f"{lee['base']['test']:.1f}", _perplexity(lee["base"]["test"], lee["best"]["test"], True)],
        ["Lee news", "Wikipedia train only", "same", f"{lee['base']['test']:.1f}",
         _perplexity(lee["base"]["test"], lee["test_wikipedia_datastore"], False)],
    ]
    return table(["test text", "datastore", "k, λ, T", "base LM", "kNN-LM"], rows)


#: bench_knnlm.py's method names, as the README calls them
KNNLM_METHODS = {
    "base LM": "base LM alone",
    "memstore exact": "memstore exact (`index=\"exact\"`)",
    "memstore IVF in RAM (index='ivf')": "memstore in-RAM IVF (`index=\"ivf\"`, recall@1024 {ivf_recall})",
    "memstore LanceDB IVF_PQ (index='ann')": "memstore LanceDB IVF_PQ (`index=\"ann\"`)",
    "faiss IndexIVFPQ (paper)": "faiss IndexIVFPQ, the paper's design (nprobe {nprobe})",
}


def _times(x: float) -> str:
    """A slowdown as the README writes it: one decimal below 50x (2.4x, 24.4x), none above (84x)."""
    return f"{x:.0f}x" if x >= 50 else f"{x:.1f}x"


def knnlm_speed() -> str:
    """What the 1M-entry datastore holds, and speed and perplexity per search method, from knnlm-1000000.json."""
    r = load(BENCH / "knnlm-1000000.json")
    ds, cfg = r["datastore"], r["config"]
    names = {k: v.format(ivf_recall=r["memstore_ivf"]["recall@1024"], nprobe=r["faiss_index"]["nprobe"])
             for k, v in KNNLM_METHODS.items()}
    faiss = next(m for m in r["results"] if m["method"].startswith("faiss"))
    searched = [m for m in r["results"] if m["slowdown_vs_base"] is not None]
    fastest = max(searched, key=lambda m: m["tokens_per_s"])
    rows = []
    for m in r["results"]:
        def cell(text, m=m):  # the fastest method with a search is bold
            return f"**{text}**" if m is fastest else text

        if m["slowdown_vs_base"] is None:  # the base LM: no search, nothing to compare with faiss
            rows.append([names[m["method"]], f"{m['perplexity']:.2f}", f"{m['tokens_per_s']:,.0f}", "1", ""])
            continue
        vs_faiss = "1" if m is faiss else cell(f"{faiss['seconds'] / m['seconds']:.2f}x")
        rows.append([names[m["method"]], f"{m['perplexity']:.2f}", cell(f"{m['tokens_per_s']:,.0f}"),
                     cell(_times(m["slowdown_vs_base"])), vs_faiss])
    intro = wrap(
        f"Speed: `python benchmarks/bench_knnlm.py` (25 min; `benchmarks/results/knnlm-{cfg['rows']}.md`) "
        f"scores {r['eval_tokens']:,} held-out Wikipedia tokens with a {ds['rows']:,}-entry datastore "
        f"({ds['dim']}-d keys), k={cfg['k']}, all methods in one run. The datastore holds the keys of the "
        f"{ds['wikipedia_rows']:,} tokens of the Wikipedia training articles and, to reach "
        f"{ds['rows']:,}, of {ds['rows'] - ds['wikipedia_rows']:,} tokens of Python's standard-library "
        f"source code:")
    head = ["method", "perplexity", "tokens/s", "slowdown vs base LM", "vs faiss"]
    return intro + "\n\n" + table(head, rows)


# -- ResMem and RAC -----------------------------------------------------------------------
def resmem() -> str:
    """Base model and ResMem test accuracy, from resmem_fashion.json."""
    r = load(EXAMPLES / "resmem_fashion.json")
    rows = []
    for res in r["results"]:
        kind, n = res["name"].split(" (", 1)
        n = n.removesuffix(")")
        label = n if kind == "full" else f"{n} ({kind})"
        rows.append([label, f"{100 * res['base']['test']:.2f}%",
                     f"**{100 * res['resmem_test']:.2f}%** (k={res['best']['k']})"])
    return table(["base model trained on", "base test", "ResMem test"], rows)


#: rac_fashion_lt.py's rows the README shows, in its order, and what the README calls them
RAC_ROWS = {
    "kNN alone (EfficientNet-Lite0 memory)": None,
    "base alone (CNN), CE": None,
    "RAC (label token), CE": None,
    "RAC (label text), CE": None,
    "base alone (CNN), logit-adjusted": None,
    "RAC (label token), logit-adjusted": None,
    "RAC (label text), logit-adjusted": None,
    "RAC (label token), logit-adjusted: its retrieval branch alone": None,
    "kNN alone, memory + 500/few-shot class": "kNN alone, memory + 500 a few-shot class",
    "RAC (label token), CE, memory + 500/few-shot class, not retrained":
        "RAC (label token), CE, memory + 500 a few-shot class, not retrained",
    "RAC (label token), logit-adjusted, memory + 500/few-shot class, not retrained":
        "RAC (label token), logit-adjusted, memory + 500 a few-shot class, not retrained",
    "RAC (label text), logit-adjusted, memory + 500/few-shot class, not retrained":
        "RAC (label text), logit-adjusted, memory + 500 a few-shot class, not retrained",
}
GROUPS = ("all", "many", "medium", "few")


def rac() -> str:
    """Mean test accuracy over seeds per group, both class rankings side by side, from rac_fashion_lt.json."""
    r = load(EXAMPLES / "rac_fashion_lt.json")
    orders = r["orders"]
    rows = []
    for name, label in RAC_ROWS.items():
        cells = []
        for order in ("index", "reversed"):
            runs = orders[order]["rows"][name]
            cells += [f"{100 * sum(run[g] for run in runs) / len(runs):.2f}" for g in GROUPS]
        rows.append([label or name] + cells)
    head = ["model", "index: all", "many", "medium", "few", "reversed: all", "many", "medium", "few"]
    return table(head, rows)


# -- forget at scale -----------------------------------------------------------------------
def forget_scale() -> str:
    """bench_forget.py at 1M and 10M x 128 (adds of 100,000 rows), beside the code before bounded
    fragments and the targeted proof (memories built by 50 adds) and a copy of the files that held the rows."""
    rows, now = [], {}
    for n in (1_000_000, 10_000_000):
        before = load(BENCH / f"forget-{n}x128-before.json")
        now[n] = load(BENCH / f"forget-{n}x128-same-adds.json")
        for b, a in zip(before["forgets"], now[n]["forgets"]):
            rows.append([f"{n:,}", f"{a['rows']:,}", f"{b['seconds']:.1f}", f"**{a['seconds']:.1f}**",
                         f"{a['data_bytes_written'] / 1e9:.3f}", f"{a['bytes_scanned'] / 1e9:.3f}",
                         f"{a['rewrite_floor_s']:.1f}", f"{a['seconds'] / a['rewrite_floor_s']:.1f}x"])
    one = [now[n]["forgets"][0]["seconds"] for n in (1_000_000, 10_000_000)]
    head = ("`python benchmarks/bench_forget.py --rows N --dim 128 --adds N/100000`: a memory built by adds of "
            "100,000 rows, then a prune and a reweight; the rows are drawn at random from the whole memory, one "
            "forget after another; \"copy\" reads, writes and fsyncs the data files that held the rows, the "
            "least any erasure must rewrite; \"before\" is the code that merged every small fragment and "
            f"scanned every file (memories built by 50 adds). One row costs {one[1] / one[0]:.1f}x as much at "
            "10M as at 1M:")
    return wrap(head) + "\n\n" + table(
        ["memory rows", "rows forgotten", "before s", "now s", "GB rewritten", "GB scanned", "copy s",
         "forget / copy"], rows)


def fragments() -> str:
    """bench_fragments.py: reads and forgets against the size of a data fragment."""
    r = load(BENCH / "fragments-2000000x128.json")
    rows = []
    for p in r["points"]:
        f1, f100 = p["forget"]["1"], p["forget"]["100"]
        size = f"{p['fragment_rows']:,}" + (" (default)" if p["fragment_rows"] == r["default"] else "")
        rows.append([size, str(p["fragments"]), f"{p['cold_count_ms']:.0f}", f"{p['group_by_ms']:.0f}",
                     f"{p['fit_s']:.2f}", f"{p['predict_64_ms']:.0f}",
                     f"{f1['seconds']:.2f} ({f1['data_bytes_written'] / 1e6:.0f} MB)",
                     f"{f100['seconds']:.1f} ({f100['data_bytes_written'] / 1e6:.0f} MB)"])
    head = (f"`python benchmarks/bench_fragments.py`: a {r['rows']:,} x {r['dim']} memory built by adds of "
            "100,000 rows with `FRAGMENT_ROWS` set to each size and optimized (so its fragments have that "
            "size), reads on fresh handles, then forgets of random rows:")
    return wrap(head) + "\n\n" + table(
        ["fragment rows", "fragments", "cold count(*) ms", "GROUP BY ms", "load every vector s", "classify 64 ms",
         "forget 1 row s (rewritten)", "forget 100 rows s (rewritten)"], rows)


# -- a memory over its life ---------------------------------------------------------------
LIFETIME = {"after": "lifetime-100000x128-100000.json", "before": "lifetime-100000x128-1000-before.json"}
LIFETIME_AGED = "lifetime-aged-28744.json"


def lifetime() -> str:
    """benchmarks/bench_lifetime.py: reads, writes and disk as small writes pile up, before and after
    the writes' own merging, cleanup and id index (the same script, two checkouts). Reads are
    compared with a fresh memory of as many rows where the run measured one, else with 0 writes."""
    runs = {label: load(BENCH / name) for label, name in LIFETIME.items()}
    rows = []
    for label in ("before", "after"):
        r = runs[label]
        for p in r["points"]:
            fresh = p.get("fresh_same_rows", r["points"][0])
            x = lambda key: f"{p[key]:.0f} ({p[key] / fresh[key]:.1f}x)"  # noqa: E731
            write = "" if p["write_ms_last_100"] is None else f"{p['write_ms_last_100']:.0f}"
            rows.append([label, f"{p['writes']:,}", f"{p['rows']:,}", x("open_ms"), x("cold_count_ms"),
                         x("provenance_query_ms"), x("versions_ms"), write, f"{p['files']:,}",
                         f"{p['bytes'] / 1e6:.0f}", f"{p['bytes_per_live_vector_byte']:.2f}x"])
    r = runs["after"]
    done = r["points"][-1]["writes"]
    head = (f"`python benchmarks/bench_lifetime.py --rows {r['rows']} --dim {r['dim']} --writes {r['writes']}`"
            + (f" (stopped after {done:,} writes)" if done < r["writes"] else "")
            + f": a {r['rows']:,} x {r['dim']} memory takes small writes (adds of 10 rows and reweights of 10 "
            "rows, alternating), each one version; every read on a new handle, its ratio against a fresh "
            "memory of as many rows (one add; for \"before\", the memory at 0 writes); the first 100 writes "
            f"took {r['first_100_writes_ms']:.0f} ms each; \"before\" is the code without the writes' "
            "merging and cleanup, in the same script:")
    aged = load(BENCH / LIFETIME_AGED)
    a, f = aged["aged"], aged["fresh"]
    side = [[name, f"{aged['versions']:,}" if name == "aged" else "1", f"{aged['rows']:,}"]
            + [f"{m[key]:.0f} ({m[key] / f[key]:.1f}x)" for key in ("open_ms", "cold_count_ms", "provenance_query_ms",
                                                                    "versions_ms", "write_ms")]
            for name, m in (("aged", a), ("fresh", f))]
    tail = (f"`python benchmarks/bench_lifetime.py --aged PATH`: the memory the run left, against a fresh "
            f"memory of as many rows, back to back under the same load (a mean over 100 writes each):")
    return (wrap(head) + "\n\n" + table(["code", "writes", "rows", "open ms", "cold count(*) ms",
                                         "provenance query ms", "versions() ms", "ms a write (last 100)",
                                         "files", "MB on disk", "disk / live vectors"], rows)
            + "\n\n" + wrap(tail) + "\n\n"
            + table(["memory", "versions", "rows", "open ms", "cold count(*) ms", "provenance query ms",
                     "versions() ms", "ms a write"], side))


def startup() -> str:
    """benchmarks/bench_startup.py: fresh-process start-up, before and after the lazy imports."""
    r = load(BENCH / "startup.json")
    before, after = r["summary"]["before"], r["summary"]["after"]
    rows = [[f"`{name}`", f"{before[name]['median_s']:.2f}", f"{after[name]['median_s']:.2f}",
             f"{after[name]['ratio_to_python']:.1f}x"] for name in after if name != "python -c pass"]
    return (wrap(f"Start-up, median of {r['runs']} fresh processes (`{r['command']}`; another job loaded the "
                 f"machine, so compare within a row), against `python -c pass` at "
                 f"{after['python -c pass']['median_s']:.2f} s:")
            + "\n\n" + table(["command", "before (s)", "now (s)", "now ÷ python -c pass"], rows))


def server() -> str:
    """benchmarks/bench_server.py: memstore serve over a million rows, through the API and in chromium."""
    r = load(BENCH / "server-1000000.json")
    rows = [["API", name, f"{m['first_ms']:.0f}", f"{m['median_ms']:.0f}"] for name, m in r["api"].items()]
    rows += [["chromium", name, f"{m['first_ms']:.0f}", f"{m['median_ms']:.0f}"] for name, m in r["browser"].items()]
    return (wrap(f"`python benchmarks/bench_server.py`: `memstore serve` (its own process) over {r['rows']:,} x "
                 f"{r['dim']} rows with a thumbnail each ({r['bytes_on_disk'] / 1e9:.1f} GB on disk), "
                 f"{r['changed']:,} of them relabelled in one version; ms, the first call (after the server's "
                 "warm-up) and the median of 5 after it; in chromium, from navigation (or the click) to the "
                 "page filled, its images decoded, checked every frame:")
            + "\n\n" + table(["through", "what", "first ms", "median ms"], rows))


#: mark name -> what writes the block
BLOCKS = {
    "store": store,
    "server": server,
    "fashion-knn": fashion_knn,
    "search-exact": search_exact,
    "search-index": search_index,
    "flexible": flexible,
    "knnlm-text": knnlm_text,
    "knnlm-speed": knnlm_speed,
    "resmem": resmem,
    "rac": rac,
    "lifetime": lifetime,
    "forget-scale": forget_scale,
    "fragments": fragments,
    "startup": startup,
}


# -- rewriting and checking ------------------------------------------------------------------
def render(text: str) -> tuple[str, list[str]]:
    """Regenerate every marked block of a README text.

    Parameters
    ----------
    text : str
        The README's contents.

    Returns
    -------
    new_text : str
        ``text`` with each block between ``<!-- figures:NAME -->`` and ``<!-- /figures -->``
        written by ``BLOCKS[NAME]``.
    stale : list of str
        The names of the blocks whose contents changed, in README order.

    Raises
    ------
    LookupError
        For a mark with no generator, or a generator whose mark is missing (a block
        deleted by hand would otherwise go unchecked).
    """
    found = [m["name"] for m in MARK.finditer(text)]
    unknown, missing = set(found) - set(BLOCKS), set(BLOCKS) - set(found)
    if unknown or missing:
        raise LookupError(f"README marks without a generator: {sorted(unknown)}; "
                          f"generators without a mark in README: {sorted(missing)}")
    stale = []

    def replace(match: re.Match) -> str:
        body = BLOCKS[match["name"]]() + "\n"
        if body != match["body"]:
            stale.append(match["name"])
        return f"<!-- figures:{match['name']} -->\n{body}<!-- /figures -->"

    return MARK.sub(replace, text), stale


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README (or with ``--check`` only compare); returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    ap.add_argument("--readme", type=Path, default=README, help="the file to rewrite or check")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    new, stale = render(text)
    if args.check:
        if stale:
            print(f"{args.readme}: stale figure blocks: {', '.join(stale)}; "
                  f"run python benchmarks/readme_figures.py", file=sys.stderr)
            return 1
        print(f"{args.readme}: all {len(BLOCKS)} figure blocks match the results files")
        return 0
    if new != text:
        args.readme.write_text(new)
    print(f"{args.readme}: rewrote {', '.join(stale) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

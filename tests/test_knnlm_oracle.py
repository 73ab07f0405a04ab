"""The kNN-LM against an oracle written from the paper's formula (Khandelwal et al. 2020).

The oracle shares no code with ``memstore.heads.knnlm``: it reads the
datastore's keys and next tokens from the memory, takes the query keys from its
own forward hook, finds the k nearest rows by brute force in float64 and mixes

    log p(y | x) = log(λ p_kNN(y | x) + (1 - λ) p_LM(y | x)),
    p_kNN(y | x) ∝ Σ_i 1[y = v_i] exp(-d(k_i, q) / T)   over the k nearest keys,

with d the squared euclidean distance for ``"l2"`` (the paper's, and
``KNNLM``'s default) and 1 - cos for ``"cosine"``: the conventions documented
in memstore/search.py and ``KNNLM``'s docstring. Every public path is checked
against it: ``log_probs``, ``perplexity``, each cell of ``perplexity_grid`` and
``KNNLogitsProcessor`` inside ``model.generate``.
"""

import math

import numpy as np
import pytest
import torch

import memstore  # first: its import hook lets transformers import on a CPU torch

from transformers import GPT2Config, GPT2LMHeadModel

from memstore.heads.knnlm import KNNLM, KNNLogitsProcessor, windows

VOCAB = 40
#: tokens of the texts: few, so that neighbours share next tokens (the Σ sums
#: several rows) and held-out tokens are often carried by some neighbours
ALPHABET = 6
K = 5  # neighbours: fewer than the 59 rows, so which rows are nearest matters
LAMBDAS = (0.1, 0.7)  # not 0.5: there λ and 1 - λ swapped are the same
TEMPERATURES = (0.5, 3.0)
METRICS = ("l2", "cosine")
RTOL = 1e-5
CONTEXT, STRIDE = 16, 8
#: windows(30, 16, 8) by its rule: every input with a next token is scored once,
#: in the first window holding it and its next token; windows move by the
#: stride. (start, end, first): inputs start + first .. end - 2 are scored.
WINDOWS = [(0, 16, 0), (8, 24, 7), (16, 30, 7)]

settings = pytest.mark.parametrize("metric, lmbda, temperature",
                                   [(m, lam, t) for m in METRICS for lam in LAMBDAS for t in TEMPERATURES])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # a forward pass of this tiny GPT-2 took 4 ms on one thread, and 300 ms on two
    # threads of a busy 2-core machine (torch's workers spin-wait for each other)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    # keys (the last ln_2's output) of norm ~2.8, not ~5.7: squared distances of ~5-8 to the nearest, so
    # exp(-d / T) spreads its weight over several neighbours even at T = 0.5, and the float32
    # rounding of memstore's distances (~|q|^2 eps) stays well under the tolerance
    with torch.no_grad():
        model.transformer.h[-1].ln_2.weight.mul_(0.5)
    return model


@pytest.fixture(scope="module")
def texts():
    """(train, held_out): 60 and 30 token ids in 1..ALPHABET."""
    rng = np.random.default_rng(0)
    return rng.integers(1, ALPHABET + 1, 60), rng.integers(1, ALPHABET + 1, 30)


@pytest.fixture(scope="module")
def mem(tmp_path_factory, gpt2, texts):
    """A datastore of the training text: 59 rows of (ffn-input key, next token)."""
    mem = memstore.open(tmp_path_factory.mktemp("knnlm-oracle") / "datastore.mem")
    memstore.build_datastore(mem, gpt2, [texts[0]], context=64)
    return mem


@pytest.fixture(scope="module")
def oracle(gpt2, mem):
    return Oracle(gpt2, mem)


class Oracle:
    """The paper's kNN-LM in float64 numpy, from the memory's rows and the model's own forward pass.

    Parameters
    ----------
    model : the GPT-2 whose keys fill ``mem``.
    mem : the datastore; its keys come from ``mem.samples.vectors`` and its
        values from SQL, both in id order.
    """

    def __init__(self, model, mem):
        self.model = model
        self.keys = mem.samples.vectors.astype(np.float64)  # (rows, dim)
        self.values = np.array([v for (v,) in mem.sql("SELECT label FROM samples ORDER BY id").fetchall()])  # (rows,)
        assert len(self.values) == len(self.keys) == 59

    def forward(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(keys, log p_LM) of every position: (seq, dim) and (seq, vocab) float64.

        The key is the input of the last block's MLP, i.e. the output of its
        ``ln_2`` (GPT2Block runs ``mlp(ln_2(h))``), read by a hook of our own.
        """
        seen = []
        handle = self.model.transformer.h[-1].ln_2.register_forward_hook(lambda m, a, out: seen.append(out))
        try:
            with torch.inference_mode():
                logits = self.model(torch.as_tensor(np.asarray(ids))[None]).logits[0]  # (seq, vocab)
        finally:
            handle.remove()
        return seen[0][0].double().numpy(), torch.log_softmax(logits.double(), -1).numpy()

    def distances(self, queries: np.ndarray, metric: str) -> np.ndarray:
        """(n, rows) distance of every query to every key: squared euclidean, or 1 - cos."""
        if metric == "l2":
            return ((queries[:, None, :] - self.keys[None, :, :]) ** 2).sum(-1)
        unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        unit_x = self.keys / np.linalg.norm(self.keys, axis=1, keepdims=True)
        return 1.0 - unit_q @ unit_x.T

    def nearest(self, queries: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows) of the k nearest keys, each (n, k), nearest first."""
        d = self.distances(queries, metric)  # (n, rows)
        order = np.argsort(d, axis=1, kind="stable")  # (n, rows)
        ranked = np.take_along_axis(d, order, 1)
        # a near-tie at the k-th place would let a float32 search pick the other row
        gap = ranked[:, k] - ranked[:, k - 1]
        assert (gap > 1e-4 * np.abs(ranked[:, k]) + 1e-7).all(), "distances tie at the cut: change the seed"
        return ranked[:, :k], order[:, :k]

    def knn_probs(self, queries: np.ndarray, metric: str, k: int, temperature: float, vocab: int) -> np.ndarray:
        """(n, vocab) p_kNN: Σ_i 1[y = v_i] exp(-d_i / T) over the k nearest, normalised."""
        d, rows = self.nearest(queries, metric, k)
        weights = np.exp(-d / temperature)  # (n, k); d / T <= ~130 here: no underflow in float64
        p = np.zeros((len(queries), vocab))
        for i in range(len(queries)):
            for j in range(k):
                p[i, self.values[rows[i, j]]] += weights[i, j]
        return p / p.sum(1, keepdims=True)

    def log_probs(self, queries, log_lm, metric, k, lmbda, temperature) -> np.ndarray:
        """(n, vocab) log(λ p_kNN + (1 - λ) p_LM)."""
        p_knn = self.knn_probs(queries, metric, k, temperature, log_lm.shape[1])
        return np.log(lmbda * p_knn + (1.0 - lmbda) * np.exp(log_lm))

    def perplexity(self, ids, metric, k, lmbda, temperature) -> float:
        """exp of the mean negative log-likelihood of ids[1:], each scored in its window of WINDOWS."""
        assert len(ids) == 30
        nll = []
        for start, end, first in WINDOWS:
            keys, log_lm = self.forward(ids[start:end])
            new = slice(first, end - start - 1)  # inputs whose next token is not scored yet
            lp = self.log_probs(keys[new], log_lm[new], metric, k, lmbda, temperature)  # (scored, vocab)
            nll.append(-lp[np.arange(len(lp)), ids[start + first + 1:end]])
        nll = np.concatenate(nll)
        assert len(nll) == len(ids) - 1
        return math.exp(nll.mean())


def test_the_oracles_windows_score_every_position_once_as_perplexity_does():
    scored = [p for s, e, f in WINDOWS for p in range(s + f, e - 1)]
    assert scored == list(range(29))
    # the oracle's windows, written out from the rule, are the ones perplexity() uses
    assert list(windows(30, CONTEXT, STRIDE)) == WINDOWS


def test_the_data_exercises_every_term_of_the_formula(oracle, texts):
    held_out = texts[1]
    keys, log_lm = oracle.forward(held_out)
    targets = held_out[1:]
    for metric in METRICS:
        _, rows = oracle.nearest(keys[:-1], metric, K)  # (29, K)
        values = oracle.values[rows]
        # neighbours share next tokens, so p_kNN sums rows (scatter, not assignment)
        assert np.mean([len(set(v)) < K for v in values]) > 0.5
        # the target is carried by some neighbour at many positions but not all: p_kNN(target)
        # takes its weights' shape into perplexity, and 0 as well
        carried = (values == targets[:, None]).any(1)
        assert 0.2 < carried.mean() < 1.0
        # each of k, T and λ (against 1 - λ) moves the perplexity by far more than the tests'
        # tolerance: a swap or a wrong term shows
        ppl = oracle.perplexity(held_out, metric, K, 0.1, 3.0)
        for other in ((2, 0.1, 3.0), (K, 0.1, 0.5), (K, 0.9, 3.0)):
            assert abs(oracle.perplexity(held_out, metric, *other) / ppl - 1) > 100 * RTOL
        # and T in exp(-d / T) against exp(-d * T): the weights differ
        d, _ = oracle.nearest(keys[:-1], metric, K)
        for t in TEMPERATURES:
            by_division = torch.softmax(torch.from_numpy(-d / t), 1)
            by_product = torch.softmax(torch.from_numpy(-d * t), 1)
            assert (by_division - by_product).abs().max() > 0.05


@settings
def test_log_probs_are_the_formula_over_brute_force_neighbours(gpt2, mem, oracle, texts, metric, lmbda,
                                                               temperature):
    held_out = texts[1]
    lm = KNNLM(gpt2, mem, k=K, lmbda=lmbda, temperature=temperature, metric=metric)
    got = lm.log_probs(torch.from_numpy(held_out))[0].double().numpy()  # (30, vocab)
    keys, log_lm = oracle.forward(held_out)
    want = oracle.log_probs(keys, log_lm, metric, K, lmbda, temperature)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    assert np.abs(want - log_lm).max() > 0.05  # the kNN part moves the LM: the comparison can fail


@settings
def test_perplexity_is_exp_of_the_oracles_mean_nll_over_its_windows(gpt2, mem, oracle, texts, metric, lmbda,
                                                                   temperature):
    held_out = texts[1]
    lm = KNNLM(gpt2, mem, k=K, lmbda=lmbda, temperature=temperature, metric=metric)
    got = lm.perplexity([held_out], context=CONTEXT, stride=STRIDE)
    assert got == pytest.approx(oracle.perplexity(held_out, metric, K, lmbda, temperature), rel=RTOL)


@pytest.mark.parametrize("metric", METRICS)
def test_every_perplexity_grid_cell_is_the_oracles_perplexity(gpt2, mem, oracle, texts, metric):
    held_out = texts[1]
    lm = KNNLM(gpt2, mem, k=K, metric=metric)
    grid = lm.perplexity_grid([held_out], k=[2, K], lmbda=list(LAMBDAS), temperature=list(TEMPERATURES),
                              context=CONTEXT, stride=STRIDE).to_pylist()
    assert len(grid) == 8 and {row["tokens"] for row in grid} == {29}
    for row in grid:
        want = oracle.perplexity(held_out, metric, row["k"], row["lmbda"], row["temperature"])
        assert row["perplexity"] == pytest.approx(want, rel=RTOL), row


@pytest.mark.parametrize("metric, lmbda, temperature", [("l2", 0.1, 3.0), ("cosine", 0.7, 0.5)])
def test_logits_processor_scores_are_the_oracles_last_position(gpt2, mem, oracle, texts, metric, lmbda,
                                                              temperature):
    held_out = texts[1]
    lm = KNNLM(gpt2, mem, k=K, lmbda=lmbda, temperature=temperature, metric=metric)
    prompts = torch.from_numpy(np.stack([held_out[:10], held_out[10:20]]))  # (2, 10): a batch, one key each
    out = gpt2.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=2, do_sample=False,
                        logits_processor=[KNNLogitsProcessor(lm)], output_scores=True,
                        return_dict_in_generate=True, pad_token_id=0)
    assert len(out.scores) == 2
    # step s scored the next token of the first 10 + s tokens (step 1 from the model's cache)
    for step, scores in enumerate(out.scores):  # (2, vocab) each
        for b in range(2):
            keys, log_lm = oracle.forward(out.sequences[b, :10 + step].numpy())
            want = oracle.log_probs(keys[-1:], log_lm[-1:], metric, K, lmbda, temperature)[0]
            np.testing.assert_allclose(scores[b].double().numpy(), want, rtol=RTOL)


def test_lambda_zero_is_the_base_lm(gpt2, mem, oracle, texts):
    held_out = texts[1]
    lm = KNNLM(gpt2, mem, k=K, lmbda=0.0, temperature=0.5)
    _, log_lm = oracle.forward(held_out)
    assert torch.equal(lm.log_probs(torch.from_numpy(held_out))[0], torch.from_numpy(log_lm).float())
    base = oracle.perplexity(held_out, "l2", K, 0.0, 0.5)
    assert lm.perplexity([held_out], context=CONTEXT, stride=STRIDE) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_a_tiny_lambda_moves_the_base_lm_as_the_formula_says(gpt2, mem, oracle, texts, metric):
    # λ = 0 takes a shortcut to the base LM; λ = 1e-3 goes through the mixing and must
    # move log p by log(1 + λ (p_kNN / p_LM - 1)): down by log(1 - λ) where no
    # neighbour carries the token, up where p_kNN > p_LM
    lmbda, temperature = 1e-3, 0.5
    held_out = texts[1]
    lm = KNNLM(gpt2, mem, k=K, lmbda=lmbda, temperature=temperature, metric=metric)
    keys, log_lm = oracle.forward(held_out)
    moved = lm.log_probs(torch.from_numpy(held_out))[0].double().numpy() - log_lm  # (30, vocab)
    p_knn = oracle.knn_probs(keys, metric, K, temperature, VOCAB)
    want = np.log1p(lmbda * (p_knn / np.exp(log_lm) - 1))
    np.testing.assert_allclose(moved, want, rtol=1e-3, atol=1e-6)  # float32 log p: ~3e-7 absolute
    np.testing.assert_allclose(moved[p_knn == 0], math.log1p(-lmbda), rtol=1e-3)
    up = p_knn > 2 * np.exp(log_lm)
    assert up.sum() >= 30 and (moved[up] > 1e-4).all()
    base = oracle.perplexity(held_out, metric, K, 0.0, temperature)
    want_ppl = oracle.perplexity(held_out, metric, K, lmbda, temperature)
    assert abs(want_ppl / base - 1) > 1e-4  # λ = 1e-3 changes the perplexity visibly
    assert lm.perplexity([held_out], context=CONTEXT, stride=STRIDE) == pytest.approx(want_ppl, rel=1e-6)

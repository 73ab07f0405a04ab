"""kNN-LM: the interpolation, the datastore rows, generation and attribution, on a tiny GPT-2."""

import math

import numpy as np
import pytest
import torch

import memstore
from memstore.errors import InvalidInputError
from memstore.heads.knnlm import KNNLM, KeyedLM, KNNLogitsProcessor, build_datastore, windows

VOCAB = 40


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def base_log_probs(model, ids):
    with torch.inference_mode():
        return torch.log_softmax(model(ids).logits.double(), -1)


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    return [rng.integers(1, VOCAB, 50), rng.integers(1, VOCAB, 30)]


def test_windows_score_every_position_once():
    for n in (2, 5, 17, 64):
        for context, stride in ((4, 4), (8, 3), (16, 16), (3, 1)):
            scored = [p for s, e, f in windows(n, context, stride) for p in range(s + f, e - 1)]
            assert scored == list(range(n - 1))


def test_datastore_rows_are_keys_next_tokens_and_provenance(mem, gpt2, corpus):
    res = build_datastore(mem, gpt2, corpus, context=16, stride=8, documents=["a", "b"], dataset="toy")
    assert res.rows == 49 + 29
    rows = mem.sql("SELECT label, document, position FROM samples ORDER BY id").fetchall()
    assert rows[:2] == [(int(corpus[0][1]), "a", 0), (int(corpus[0][2]), "a", 1)]
    assert rows[49] == (int(corpus[1][1]), "b", 0)
    # keys: the output of the last block's ln_2 (the MLP's input), over the first window
    seen = []
    handle = gpt2.transformer.h[-1].ln_2.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    with torch.inference_mode():
        out = gpt2(torch.from_numpy(corpus[0][:16])[None], output_hidden_states=True)
    handle.remove()
    np.testing.assert_allclose(mem.samples.vectors[:15], seen[0][0, :15].numpy(), atol=1e-6)
    _, final = KeyedLM(gpt2, "final")(torch.from_numpy(corpus[0][:16])[None])
    np.testing.assert_allclose(final[0].numpy(), out.hidden_states[-1][0].numpy(), atol=1e-6)


def test_lambda_zero_is_the_base_lm_exactly(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus, context=16)
    ids = torch.from_numpy(corpus[1][:20])[None]
    lm = KNNLM(gpt2, mem, k=8, lmbda=0.0)
    base = base_log_probs(gpt2, ids).float()
    assert torch.equal(lm.log_probs(ids), base)
    ppl = math.exp(-float(base[0, :-1].gather(1, ids[0, 1:, None]).sum()) / 19)
    assert lm.perplexity([corpus[1][:20]], context=32) == pytest.approx(ppl, rel=1e-5)


def test_interpolation_is_a_distribution_and_memorises_its_datastore(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus, context=64)
    ids = torch.from_numpy(corpus[0])[None]
    lm = KNNLM(gpt2, mem, k=4, lmbda=0.5, temperature=1e-3)
    lp = lm.log_probs(ids)
    np.testing.assert_allclose(lp.exp().sum(-1).numpy(), 1.0, rtol=1e-5)
    # each training context finds itself (distance 0): p_kNN(true next token) = 1
    base = base_log_probs(gpt2, ids)
    want = torch.log(0.5 + 0.5 * base[0, :-1].gather(1, ids[0, 1:, None]).exp())
    got = lp[0, :-1].gather(1, ids[0, 1:, None]).double()
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)
    base_ppl = KNNLM(gpt2, mem, k=4, lmbda=0.0).perplexity(corpus, context=64)
    assert lm.perplexity(corpus, context=64) < base_ppl / 2


def test_generate_samples_from_the_knn_lm(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus, context=64)
    lm = KNNLM(gpt2, mem, k=1, lmbda=1.0, temperature=1e-3)
    prompt = torch.from_numpy(corpus[0][:10])[None]
    out = gpt2.generate(prompt, max_new_tokens=8, do_sample=False, logits_processor=[KNNLogitsProcessor(lm)],
                        pad_token_id=0)
    # with lambda = 1 and the training text as datastore, greedy decoding recites it
    assert out[0, 10:].tolist() == corpus[0][10:18].tolist()


def test_explain_names_the_rows_behind_a_prediction(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus, context=64, documents=["first", "second"])
    lm = KNNLM(gpt2, mem, k=5, lmbda=0.5, temperature=1e-3)
    table = lm.explain(corpus[1][:12]).to_pylist()
    # the last input (position 11) finds its own datastore row, which holds token 12
    assert table[0]["document"] == "second" and table[0]["position"] == 11 and table[0]["distance"] < 1e-4
    assert table[0]["supports"] and table[0]["value"] == corpus[1][12] and table[0]["share"] > 0.99
    assert [r["rank"] for r in table] == list(range(5))


class ToyTokenizer:
    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def test_explain_reads_the_text_around_each_row_from_the_datastore(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus, context=64, documents=["first", "second"])
    lm = KNNLM(gpt2, mem, k=3, lmbda=0.5, temperature=1e-3)
    top = lm.explain(corpus[1][:12], tokenizer=ToyTokenizer(), window=4).to_pylist()[0]
    assert top["position"] == 11
    assert top["context_ids"] == corpus[1][8:12].tolist()  # tokens 8..11: what the key saw last
    assert top["continuation_ids"] == corpus[1][12:16].tolist()  # its value, token 12, and on
    assert top["context"] == " ".join(f"t{i}" for i in corpus[1][8:12])
    # near a document's edges the window is cut: token 0 is no row's value, the last row ends the text
    start = lm.explain(corpus[0][:3], window=4).to_pylist()[0]
    assert start["position"] == 2 and start["context_ids"] == corpus[0][1:3].tolist()
    end = lm.explain(corpus[1][:29], window=4).to_pylist()[0]
    assert end["position"] == 28 and end["continuation_ids"] == [corpus[1][29]]
    with pytest.raises(InvalidInputError, match="window"):
        lm.explain(corpus[1][:12], window=0)


def test_perplexity_grid_equals_one_model_per_setting(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus[:1], context=64)
    held_out = [corpus[1]]
    lm = KNNLM(gpt2, mem, k=4)
    grid = lm.perplexity_grid(held_out, k=[1, 4, 16], lmbda=[0.0, 0.3, 1.0], temperature=[0.5, 20.0], context=16)
    assert grid.num_rows == 18 and set(grid["tokens"].to_pylist()) == {29}
    for row in grid.to_pylist():
        one = KNNLM(gpt2, mem, k=row["k"], lmbda=row["lmbda"], temperature=row["temperature"])
        assert row["perplexity"] == pytest.approx(one.perplexity(held_out, context=16), rel=1e-9)
    base = [r["perplexity"] for r in grid.to_pylist() if r["lmbda"] == 0.0]
    assert len(set(base)) == 1  # λ = 0 ignores k and T
    for kwargs, match in (({"k": []}, "k must be"), ({"lmbda": [0.5, 2]}, "lmbda"),
                          ({"temperature": [-1]}, "temperature"), ({"k": [10_000]}, "k = 10000")):
        with pytest.raises(InvalidInputError, match=match):
            lm.perplexity_grid(held_out, **kwargs)


def test_bad_parameters_are_refused(mem, gpt2, corpus):
    with pytest.raises(InvalidInputError, match="no document of two or more tokens"):
        build_datastore(mem, gpt2, [[1]])
    build_datastore(mem, gpt2, corpus, context=16)
    for kwargs, match in (({"lmbda": 1.5}, "lmbda"), ({"temperature": 0}, "temperature"),
                          ({"k": 10_000}, "k = 10000"), ({"layer": "middle"}, "layer")):
        with pytest.raises(InvalidInputError, match=match):
            KNNLM(gpt2, mem, **kwargs)
    with pytest.raises(InvalidInputError, match="stride"):
        build_datastore(mem, gpt2, corpus, context=16, stride=17)
    with pytest.raises(InvalidInputError, match="tokenizer"):
        build_datastore(mem, gpt2, ["some text"])
    other = memstore.open(mem.path.parent / "labels.mem")
    other.add(np.ones((3, 32), np.float32), ["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="not token ids"):
        KNNLM(gpt2, other, k=1)


def test_many_knn_lms_share_one_hook_per_layer(mem, gpt2, corpus):
    build_datastore(mem, gpt2, corpus, context=16)
    hooks = gpt2.transformer.h[-1].mlp._forward_pre_hooks
    for k in (1, 2, 4):
        KNNLM(gpt2, mem, k=k)
    before = len(hooks)
    for k in (1, 2, 4):
        KNNLM(gpt2, mem, k=k)
    assert len(hooks) == before == 1


def test_float16_keys_halve_the_datastore_and_keep_its_perplexity(tmp_path, gpt2, corpus):
    full = memstore.open(tmp_path / "float32.mem")
    half = memstore.open(tmp_path / "float16.mem")
    build_datastore(full, gpt2, corpus[:1], context=64)
    build_datastore(half, gpt2, corpus[:1], context=64, key_dtype="float16")
    assert (full.vector_dtype, half.vector_dtype) == ("float32", "float16")
    np.testing.assert_allclose(half.samples.vectors, full.samples.vectors, rtol=1e-3, atol=1e-3)
    ppl = [KNNLM(gpt2, m, k=8, lmbda=0.5, temperature=1.0).perplexity([corpus[1]], context=16) for m in (full, half)]
    assert ppl[1] == pytest.approx(ppl[0], rel=1e-2)


def test_ivf_index_gives_the_exact_perplexity_when_it_finds_the_neighbours(mem, gpt2, corpus):
    pytest.importorskip("faiss")
    build_datastore(mem, gpt2, corpus[:1], context=64)
    exact = KNNLM(gpt2, mem, k=8, lmbda=0.5, temperature=1.0, index="exact")
    ivf = KNNLM(gpt2, mem, k=8, lmbda=0.5, temperature=1.0, index="ivf")
    assert ivf.searcher.recall == 1.0
    assert ivf.perplexity([corpus[1]], context=16) == pytest.approx(exact.perplexity([corpus[1]], context=16),
                                                                    rel=1e-5)

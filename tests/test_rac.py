"""RACClassifier: the retrieval branch is read, own rows are left out, the memory can change after fit."""

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import memstore
from memstore.heads.rac import RACClassifier

SMALL = dict(width=32, heads=2, epochs=15, batch_size=64, lr=1e-2)


def clusters(n, n_classes=3, dim=8, seed=0, spread=0.5):
    """(queries, labels): well separated Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).standard_normal((n_classes, dim)).astype(np.float32) * 3
    y = rng.integers(0, n_classes, n)
    return (centers[y] + spread * rng.standard_normal((n, dim))).astype(np.float32), y


def blind(n):
    """Base inputs that carry no information: only the memory can tell the classes apart."""
    return np.zeros((n, 4), np.float32)


class WordVectors:
    """A stand-in text encoder: a fixed random vector per text."""

    def __init__(self, dim=16):
        self.dim, self.seen = dim, []

    def encode(self, texts, progress=None):
        self.seen.append(list(texts))
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim)
                         for t in texts]).astype(np.float32)


@pytest.fixture
def memory(tmp_path):
    q, y = clusters(300)
    mem = memstore.open(tmp_path / "rac.mem")
    ids = mem.add(q, [f"class {c}" for c in y]).ids
    return mem, q, y, ids


def test_the_retrieval_branch_classifies_what_the_base_cannot_see(memory):
    mem, q, y, ids = memory
    rac = RACClassifier(mem, k=8, **SMALL).fit(blind(len(y)), y, queries=q, memory_ids=ids)
    q_test, y_test = clusters(200, seed=1)
    assert rac.score(blind(200), y_test, queries=q_test) > 0.95
    proba = rac.predict_proba(blind(200), queries=q_test)
    assert proba.shape == (200, 3) and np.allclose(proba.sum(1), 1)
    assert rac.history_[-1] < rac.history_[0]


def test_own_rows_are_left_out_so_the_branch_cannot_learn_to_copy(tmp_path):
    # random vectors with random labels: a row's own label is the only signal there is
    rng = np.random.default_rng(0)
    q = rng.standard_normal((200, 16)).astype(np.float32)
    y = rng.integers(0, 4, 200)
    mem = memstore.open(tmp_path / "noise.mem")
    ids = mem.add(q, [str(c) for c in y]).ids
    params = dict(k=4, **{**SMALL, "epochs": 30})
    with pytest.warns(UserWarning, match="memory_ids"):
        copying = RACClassifier(mem, **params).fit(blind(200), y, queries=q)
    honest = RACClassifier(mem, **params).fit(blind(200), y, queries=q, memory_ids=ids)
    assert copying.history_[-1] < 0.3 * math.log(4)  # it found its own label and learned to read it
    assert honest.history_[-1] > 0.8 * math.log(4)  # without it, nothing is left to learn
    assert copying.score(blind(200), y, queries=q) == 1.0


def test_memory_ids_may_name_rows_outside_the_memory(memory):
    mem, q, y, ids = memory
    some = np.where(np.arange(len(ids)) % 2 == 0, ids, -1)
    RACClassifier(mem, k=4, **{**SMALL, "epochs": 1}).fit(blind(len(y)), y, queries=q, memory_ids=some)
    with pytest.raises(memstore.InvalidInputError, match=r"memory_ids \[99999\] are not rows"):
        RACClassifier(mem, k=4, **SMALL).fit(blind(len(y)), y, queries=q,
                                             memory_ids=np.r_[ids[:-1], 99999])
    with pytest.raises(memstore.InvalidInputError, match="memory_ids has 3 entries"):
        RACClassifier(mem, k=4, **SMALL).fit(blind(len(y)), y, queries=q, memory_ids=ids[:3])


def fit_then_relabel(tmp_path, text_encoder=None):
    """A RAC whose base tells class 2 from the rest but not 0 from 1 (only the memory does);
    then the memory's class-0 rows are relabelled "class 1" in a new version."""
    q, y = clusters(300)
    mem = memstore.open(tmp_path / "steer.mem")
    ids = mem.add(q, [f"class {c}" for c in y]).ids
    rac = RACClassifier(mem, k=8, text_encoder=text_encoder, **SMALL)
    rac.fit(is_class_2(y), y, queries=q, memory_ids=ids)
    mem.relabel("SELECT id, 'class 1' AS label FROM samples WHERE label = 'class 0'")
    return rac, mem


def is_class_2(y):
    return (np.asarray(y) == 2).astype(np.float32)[:, None]


def test_predictions_follow_the_memory_without_retraining(tmp_path):
    rac, mem = fit_then_relabel(tmp_path)
    q_test, y_test = clusters(300, seed=2)
    X_test = is_class_2(y_test)
    assert rac.score(X_test, y_test, queries=q_test) > 0.95  # pinned: the relabel is not read yet
    assert rac.memory_version_ < mem.version
    rac.use_memory(mem)
    assert rac.memory_version_ == mem.version
    predicted = rac.predict(X_test, queries=q_test)
    assert (predicted[y_test == 0] == 1).mean() > 0.95  # what the memory now says
    assert (predicted[y_test != 0] == y_test[y_test != 0]).mean() > 0.95


def test_unseen_labels_need_a_text_encoder(tmp_path):
    rac, mem = fit_then_relabel(tmp_path)
    mem.add(np.ones((2, 8), np.float32), ["a label never seen", "class 0"])
    with pytest.raises(memstore.InvalidInputError, match="labels the model never saw: \\['a label never seen'\\]"):
        rac.use_memory(mem)
    assert rac.memory_version_ < mem.version  # nothing changed
    other = memstore.open(tmp_path / "other.mem")
    other.add(np.ones((10, 5), np.float32), ["class 0"] * 10)
    with pytest.raises(memstore.InvalidInputError, match="5-d vectors, the model was trained on 8-d"):
        rac.use_memory(other)
    with pytest.raises(memstore.MemoryNotFoundError):
        rac.use_memory(tmp_path / "missing.mem")
    assert not (tmp_path / "missing.mem").exists()
    words = WordVectors()
    rac, mem = fit_then_relabel(tmp_path / "text", text_encoder=words)
    mem.add(np.ones((2, 8), np.float32), ["a label never seen", "class 0"])
    rac.use_memory(mem)
    assert "a label never seen" in words.seen[-1] and rac.memory_version_ == mem.version
    assert tuple(rac.model_.retrieval.table.shape) == (4, words.dim)  # class 0 stays in the vocabulary


def test_explain_names_the_rows_and_splits_the_logit(memory):
    mem, q, y, ids = memory
    names = np.array([f"class {c}" for c in range(3)])  # as the memory's labels: rows can support
    rac = RACClassifier(mem, k=6, **SMALL).fit(blind(len(y)), names[y], queries=q, memory_ids=ids)
    q_test, _ = clusters(5, seed=3)
    table = rac.explain(blind(5), queries=q_test)
    assert table.num_rows == 5 * 6
    fused = rac.decision_function(blind(5), queries=q_test)
    base, retrieval = rac.decision_parts(blind(5), queries=q_test)
    np.testing.assert_allclose(base + retrieval, fused)
    assert (retrieval.argmax(1) == fused.argmax(1)).all()  # the base sees nothing: the memory decides
    first = table.filter(table["rank"].to_numpy() == 0).to_pydict()
    assert np.allclose(np.add(first["base_part"], first["retrieval_part"]), fused.max(1), atol=1e-5)
    _, neighbour_ids = rac.kneighbors(blind(5), queries=q_test)
    assert table["id"].to_numpy().reshape(5, 6).tolist() == neighbour_ids.tolist()
    labels = dict(zip(*mem.sql("SELECT id, label FROM samples").fetchnumpy().values()))
    assert [labels[i] for i in table["id"].to_pylist()] == table["label"].to_pylist()
    supports = table["supports"].to_numpy(zero_copy_only=False)
    contribution = table["contribution"].to_numpy()
    assert supports.any() and contribution[supports].mean() > 0


def test_contribution_is_what_forgetting_the_row_would_change(memory):
    mem, q, y, ids = memory
    rac = RACClassifier(mem, k=6, **SMALL).fit(blind(len(y)), y, queries=q, memory_ids=ids)
    q_test, _ = clusters(1, seed=4)
    table = rac.explain(blind(1), queries=q_test).to_pydict()
    fused = rac.decision_function(blind(1), queries=q_test)[0]
    predicted = int(np.argmax(fused))
    for rank in (0, 3):
        row = table["id"][rank]
        gone = mem.at(mem.version)
        mem.prune(f"SELECT id FROM samples WHERE id = {row}", message="what if")
        after = rac.use_memory(mem).decision_function(blind(1), queries=q_test)[0]
        assert after[predicted] == pytest.approx(fused[predicted] - table["contribution"][rank], abs=1e-5)
        mem.restore(gone.version)
        rac.use_memory(mem)


def test_text_column_is_read_instead_of_the_label(memory, tmp_path):
    _, q, y, _ = memory
    mem = memstore.open(tmp_path / "captions.mem")
    ids = mem.add(q, y.astype(np.int64), provenance={"caption": [f"a photo of a {c}" for c in y]}).ids
    rac = RACClassifier(mem, k=4, text_column="caption", **SMALL).fit(blind(len(y)), y, queries=q, memory_ids=ids)
    assert sorted(rac.vocabulary_) == ["a photo of a 0", "a photo of a 1", "a photo of a 2"]
    with pytest.raises(memstore.InvalidInputError, match="text_column 'nope' is not a column"):
        RACClassifier(mem, text_column="nope", **SMALL).fit(blind(len(y)), y, queries=q)


def test_a_torch_base_model_is_trained_on_a_copy(memory):
    mem, q, y, ids = memory
    base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    before = [p.detach().clone() for p in base.parameters()]
    rac = RACClassifier(mem, base_model=base, k=4, **SMALL).fit(q[:, None, :], y, queries=q, memory_ids=ids)
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters()))
    assert not torch.equal(rac.model_.base[1].weight, base[1].weight)
    assert rac.score(q[:, None, :], y, queries=q) > 0.95


def test_the_estimator_contract(memory):
    mem, q, y, ids = memory
    rac = RACClassifier(mem, k=5, logit_adjustment=1.0, **SMALL)
    assert clone(rac).get_params()["k"] == 5
    labels = np.array(["cat", "dog", "emu"])[y]
    fitted = rac.fit(q, labels, memory_ids=ids)  # the default base: a linear layer on X, X is the query
    assert fitted is rac and rac.classes_.tolist() == ["cat", "dog", "emu"]
    assert set(rac.predict(q[:10])) <= {"cat", "dog", "emu"}


@pytest.mark.parametrize("params, fit_kwargs, message", [
    (dict(epochs=0), {}, "epochs must be a positive int"),
    (dict(width=30, heads=4), {}, "width 30 must be a multiple of heads 4"),
    (dict(lr=-1.0), {}, "lr must be positive"),
    (dict(logit_adjustment=-1), {}, "logit_adjustment must be >= 0"),
    (dict(k=300), {}, "k = 300, n_samples_fit = 299"),  # one row fewer: its own is left out
    (dict(base_model=torch.nn.Linear(4, 5)), {}, r"base_model returns shape \(2, 5\)"),
    (dict(), dict(queries=np.zeros((300, 8, 1))), "queries must be \\(n, dim\\)"),
    (dict(), dict(queries=np.zeros((299, 8))), "299 queries for 300 inputs"),
])
def test_bad_input_is_refused_with_the_fix(memory, params, fit_kwargs, message):
    mem, q, y, ids = memory
    kwargs = {**SMALL, "k": 4, **params}
    with pytest.raises(memstore.InvalidInputError, match=message):
        RACClassifier(mem, **kwargs).fit(blind(len(y)), y, **{"queries": q, "memory_ids": ids, **fit_kwargs})


def test_more_errors(memory):
    mem, q, y, ids = memory
    with pytest.raises(NotFittedError, match="not fitted"):
        RACClassifier(mem).predict(q)
    with pytest.raises(memstore.InvalidInputError, match="at least two classes"):
        RACClassifier(mem, **SMALL).fit(blind(len(y)), np.zeros(len(y), int), queries=q)
    with pytest.raises(memstore.InvalidInputError, match="linear layer on 2-D features"):
        RACClassifier(mem, **SMALL).fit(np.zeros((len(y), 2, 2)), y, queries=q, memory_ids=ids)
    with pytest.raises(memstore.InvalidInputError, match="299 labels for 300 inputs"):
        RACClassifier(mem, **SMALL).fit(blind(len(y)), y[:-1], queries=q)

"""ResMem: residuals stored next to embeddings, the k-NN correction, attribution, the estimator contract."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import memstore
from memstore.errors import InvalidInputError
from memstore.heads.resmem import ResMem, model_outputs


def mlp(n_in=2, n_out=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out))


@pytest.fixture(scope="module")
def rings():
    """Three classes on concentric rings: an untrained MLP gets about a third right."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 900)
    angle = rng.uniform(0, 2 * np.pi, 900)
    X = np.stack([np.cos(angle), np.sin(angle)], 1) * (1 + y)[:, None] + rng.normal(0, 0.1, (900, 2))
    return X.astype(np.float32), y


def test_k1_and_small_sigma_reproduce_the_training_labels(rings):
    X, y = rings
    head = ResMem(mlp(), k=1, sigma=1e-4).fit(X, y)
    assert (head.predict(X) == y).all()
    assert (model_outputs(head.base_model, X)[0].argmax(1) != y).mean() > 0.3  # the base model alone does not
    reg = ResMem(mlp(n_out=1), k=1, sigma=1e-4, task="regression").fit(X, X[:, 0] * 3)
    np.testing.assert_allclose(reg.predict(X), X[:, 0] * 3, atol=1e-4)


def test_residuals_are_a_vector_column_of_the_memory(tmp_path, rings):
    X, y = rings
    mem = memstore.open(tmp_path / "resmem.mem")
    head = ResMem(mlp(), memory=mem, k=5).fit(X[:100], y[:100], provenance={"split": "train"})
    row = mem.sql("SELECT label, residual, split FROM samples ORDER BY id LIMIT 1").fetchall()[0]
    probs = torch.softmax(mlp()(torch.from_numpy(X[:1])), 1).detach().numpy()[0]
    np.testing.assert_allclose(row[1], np.eye(3)[y[0]] - probs, atol=1e-5)  # onehot(y) - softmax(f(x))
    assert row[0] == y[0] and row[2] == "train" and mem.dim == 16  # the embedding: the last layer's input
    assert head.memory_version_ == mem.version == 1


def test_the_memory_corrects_a_weak_base_model_on_held_out_rows(rings):
    X, y = rings
    head = ResMem(mlp(), k=10, sigma=0.1).fit(X[:600], y[:600])
    base = model_outputs(head.base_model, X[600:])[0].argmax(1)
    assert (base == y[600:]).mean() < 0.5 and head.score(X[600:], y[600:]) > 0.9
    proba = head.predict_proba(X[600:])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (proba >= 0).all()


def test_explain_adds_up_to_the_memorys_part(rings):
    X, y = rings
    head = ResMem(mlp(), k=4, sigma=0.5).fit(X[:300], y[:300])
    table = head.explain(X[300:305])
    assert table.num_rows == 20 and set(table["label"].to_pylist()) <= {0, 1, 2}
    base = model_outputs(head.base_model, X[300:305])[0]
    base = np.exp(base - base.max(1, keepdims=True))
    base /= base.sum(1, keepdims=True)
    scores = head.decision_function(X[300:305])
    pred = scores.argmax(1)
    per_query = np.bincount(table["query"].to_numpy(), weights=table["contribution"].to_numpy())
    np.testing.assert_allclose(per_query, scores[np.arange(5), pred] - base[np.arange(5), pred], atol=1e-5)
    np.testing.assert_allclose(np.bincount(table["query"].to_numpy(), weights=table["weight"].to_numpy()), 1.0)


def test_score_grid_equals_scoring_each_setting(rings):
    X, y = rings
    y = np.where(np.random.default_rng(1).random(len(y)) < 0.3, np.arange(len(y)) % 3, y)  # noisy: k matters
    head = ResMem(mlp(), k=2, sigma=0.5).fit(X[:600], y[:600])
    grid = head.score_grid(X[600:], y[600:], k=[1, 5, 20], sigma=[0.05, 1.0])  # k above the head's own
    assert grid.column_names == ["k", "sigma", "score"] and grid.num_rows == 6
    for row in grid.to_pylist():
        single = clone(head).set_params(k=row["k"], sigma=row["sigma"]).fit(X[:600], y[:600])
        assert row["score"] == single.score(X[600:], y[600:])
    assert head.k == 2 and len(set(grid["score"].to_pylist())) > 1
    reg = ResMem(mlp(n_out=1), k=3, task="regression").fit(X[:600], X[:600, 0])
    assert reg.score_grid(X[600:], X[600:, 0])["score"][0].as_py() == reg.score(X[600:], X[600:, 0])
    with pytest.raises(InvalidInputError, match="sigma must be positive"):
        head.score_grid(X[600:], y[600:], sigma=[0.0])
    with pytest.raises(InvalidInputError, match="k = 601"):
        head.score_grid(X[600:], y[600:], k=[601])


def test_estimator_contract_and_bad_input(rings, tmp_path):
    X, y = rings
    head = ResMem(mlp(), k=3, sigma=0.2)
    assert clone(head).get_params()["k"] == 3
    with pytest.raises(NotFittedError, match="not fitted"):
        head.predict(X)
    with pytest.raises(InvalidInputError, match="class indices 0..2"):
        head.fit(X[:10], y[:10] + 5)
    with pytest.raises(InvalidInputError, match="task must be"):
        ResMem(mlp(), task="ranking").fit(X, y)
    with pytest.raises(InvalidInputError, match="sigma must be positive"):
        ResMem(mlp(), sigma=0).fit(X, y)
    with pytest.raises(InvalidInputError, match="no torch.nn.Linear"):
        ResMem(torch.nn.ReLU()).fit(X, y)
    other = memstore.open(tmp_path / "other.mem")
    other.add(np.zeros((5, 16), np.float32), 0)
    with pytest.raises(InvalidInputError, match="carry no residual"):
        ResMem(mlp(), memory=other, k=2).fit(X[:10], y[:10])


def test_fit_and_predict_leave_the_base_model_in_its_own_mode(rings):
    """A model the caller is still training stays in train mode (dropout on) after fit and predict."""
    X, y = rings
    model = mlp().train()
    head = ResMem(model, k=3).fit(X[:200], y[:200])
    assert model.training
    head.predict(X[200:220])
    assert model.training
    assert not ResMem(model.eval(), k=3).fit(X[:200], y[:200]).base_model.training

"""ResMem against an independent oracle: every number recomputed by hand in numpy.

The oracle reads only the base model's weights and the training data: it runs
the tiny MLP itself, finds the neighbours by brute force (squared euclidean
for ``metric="l2"``, 1 - cos for ``"cosine"``: the memory's distance
conventions, memstore/search.py) and writes the ResMem formula of the module
docstring out,

    r_i = onehot(y_i) - softmax(f(x_i) / T),   w = softmax(-d / σ) over the k nearest,
    ResMem(x) = softmax(f(x) / T) + Σ_i w_i r_i.

σ and T are far from 1 and k is below the number of rows, so exp(-d·σ) for
exp(-d/σ), f·T for f/T, a flipped residual or all rows for the k nearest each
change the answer (the tests check that they would).
"""

import numpy as np
import pytest
import torch

import memstore
from memstore.heads.resmem import ResMem

N_TRAIN, N_QUERY, N_IN, N_HIDDEN, N_CLASSES = 40, 7, 3, 6, 4
K = 5  # < N_TRAIN: the k nearest, not all rows


def tiny_mlp(n_out=N_CLASSES, seed=0):
    """Linear(3, 6) -> tanh -> Linear(6, n_out): the embedding is the tanh output."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.Tanh(), torch.nn.Linear(N_HIDDEN, n_out))


def by_hand(model, X) -> tuple[np.ndarray, np.ndarray]:
    """(logits (n, out), embeddings (n, 6)) of the tiny MLP from its weights, in float64."""
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in model.parameters())
    h = np.tanh(np.asarray(X, np.float64) @ w1.T + b1)  # (n, 6): the input of the last Linear
    return h @ w2.T + b2, h


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def brute_force(queries, rows, k, metric="l2") -> tuple[np.ndarray, np.ndarray]:
    """(distances, positions) (n, k) of the k nearest rows, nearest first."""
    if metric == "l2":
        d = ((queries[:, None, :] - rows[None, :, :]) ** 2).sum(-1)  # (n, rows): squared euclidean
    else:
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        rn = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        d = 1 - qn @ rn.T  # (n, rows)
    pos = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, pos, 1), pos


def weights(dist, sigma):
    """(n, k) w_i ∝ exp(-d_i / σ), each row summing to 1."""
    w = np.exp(-(dist - dist.min(1, keepdims=True)) / sigma)
    return w / w.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    """Seeded inputs and labels; the labels are random, so the base model is often wrong."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N_TRAIN, N_IN)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, N_TRAIN)
    Q = rng.standard_normal((N_QUERY, N_IN)).astype(np.float32)
    return X, y, Q


def oracle(X, y, Q, sigma, temperature, k=K, metric="l2"):
    """Everything ResMem should compute, by hand: a dict of numpy arrays."""
    model = tiny_mlp()
    logits, emb = by_hand(model, X)
    residual = np.eye(N_CLASSES)[y] - softmax(logits / temperature)  # (N_TRAIN, classes)
    q_logits, q_emb = by_hand(model, Q)
    base = softmax(q_logits / temperature)  # (N_QUERY, classes)
    dist, pos = brute_force(q_emb, emb, k, metric)
    w = weights(dist, sigma)
    scores = base + np.einsum("nk,nkc->nc", w, residual[pos])
    return dict(emb=emb, residual=residual, base=base, dist=dist, pos=pos, w=w, scores=scores)


SETTINGS = [(0.3, 0.5), (4.0, 2.0)]  # (σ, T): σ·d ≠ d/σ and f·T ≠ f/T at both


@pytest.mark.parametrize("sigma, temperature", SETTINGS)
def test_the_memory_holds_each_rows_embedding_and_its_residual_onehot_minus_tempered_softmax(
        data, tmp_path, sigma, temperature):
    X, y, Q = data
    mem = memstore.open(tmp_path / "resmem.mem")
    ResMem(tiny_mlp(), memory=mem, k=K, sigma=sigma, temperature=temperature).fit(X, y)
    want = oracle(X, y, Q, sigma, temperature)
    stored = mem.sql("SELECT label, residual FROM samples ORDER BY id").fetchnumpy()
    residual = np.stack(stored["residual"])  # (N_TRAIN, classes), in the order the rows were added
    np.testing.assert_allclose(residual, want["residual"], atol=1e-6)
    np.testing.assert_allclose(mem.samples.vectors, want["emb"], atol=1e-6)  # the tanh output, not the logits
    assert stored["label"].tolist() == y.tolist()
    # the temperature matters here: f·T, or no T at all, would store other residuals
    logits, _ = by_hand(tiny_mlp(), X)
    for wrong in (logits * temperature, logits):
        assert np.abs(np.eye(N_CLASSES)[y] - softmax(wrong) - want["residual"]).max() > 1e-2


@pytest.mark.parametrize("sigma, temperature", SETTINGS)
def test_predictions_are_the_tempered_softmax_plus_the_weighted_residuals_of_the_k_nearest(
        data, sigma, temperature):
    X, y, Q = data
    head = ResMem(tiny_mlp(), k=K, sigma=sigma, temperature=temperature).fit(X, y)
    want = oracle(X, y, Q, sigma, temperature)
    np.testing.assert_allclose(head.decision_function(Q), want["scores"], atol=1e-5)
    clipped = np.clip(want["scores"], 0, None)  # predict_proba: clipped at 0, each row normalised
    np.testing.assert_allclose(head.predict_proba(Q), clipped / clipped.sum(1, keepdims=True), atol=1e-5)
    assert head.predict(Q).tolist() == want["scores"].argmax(1).tolist()
    # the parameters are where the alternatives differ, so the comparison above can fail
    exp_d_times_sigma = np.exp(-want["dist"] * sigma) / np.exp(-want["dist"] * sigma).sum(1, keepdims=True)
    assert np.abs(exp_d_times_sigma - want["w"]).max() > 1e-2
    all_rows = oracle(X, y, Q, sigma, temperature, k=N_TRAIN)["scores"]
    assert np.abs(all_rows - want["scores"]).max() > 1e-2
    flipped = want["base"] - np.einsum("nk,nkc->nc", want["w"], want["residual"][want["pos"]])
    assert np.abs(flipped - want["scores"]).max() > 1e-2


def test_cosine_distances_are_one_minus_cos_in_the_weights(data):
    X, y, Q = data
    sigma, temperature = 0.05, 0.5  # cosine distances are small: a small σ makes them count
    head = ResMem(tiny_mlp(), k=K, sigma=sigma, temperature=temperature, metric="cosine").fit(X, y)
    want = oracle(X, y, Q, sigma, temperature, metric="cosine")
    np.testing.assert_allclose(head.decision_function(Q), want["scores"], atol=1e-5)
    table = head.explain(Q)
    np.testing.assert_allclose(table["distance"].to_numpy().reshape(N_QUERY, K), want["dist"], atol=1e-5)


@pytest.mark.parametrize("sigma, temperature", SETTINGS)
def test_explain_gives_each_neighbours_distance_weight_label_and_contribution_to_the_predicted_class(
        data, sigma, temperature):
    X, y, Q = data
    head = ResMem(tiny_mlp(), k=K, sigma=sigma, temperature=temperature).fit(X, y)
    want = oracle(X, y, Q, sigma, temperature)
    t = head.explain(Q).to_pydict()
    shape = (N_QUERY, K)
    assert t["query"] == np.repeat(np.arange(N_QUERY), K).tolist()
    assert t["rank"] == np.tile(np.arange(K), N_QUERY).tolist()
    ids = head.memory_.sql("SELECT id FROM samples ORDER BY id").fetchnumpy()["id"]  # row i: training row i
    assert np.reshape(t["id"], shape).tolist() == ids[want["pos"]].tolist()
    assert np.reshape(t["label"], shape).tolist() == y[want["pos"]].tolist()
    np.testing.assert_allclose(np.reshape(t["distance"], shape), want["dist"], atol=1e-5)
    np.testing.assert_allclose(np.reshape(t["weight"], shape), want["w"], atol=1e-5)
    predicted = want["scores"].argmax(1)  # (N_QUERY,)
    contribution = want["w"] * want["residual"][want["pos"], predicted[:, None]]  # (N_QUERY, K)
    np.testing.assert_allclose(np.reshape(t["contribution"], shape), contribution, atol=1e-5)
    assert np.abs(contribution).max() > 1e-2  # the memory does move the predicted class


def test_score_grid_cells_are_the_accuracy_and_r2_of_the_hand_computed_predictions(data):
    X, y, Q = data
    rng = np.random.default_rng(11)
    X_val = rng.standard_normal((200, N_IN)).astype(np.float32)
    y_val = rng.integers(0, N_CLASSES, 200)
    ks, sigmas, temperature = [2, 5, 9], [0.3, 4.0], 2.0  # 9 > the head's k: a second, larger search
    head = ResMem(tiny_mlp(), k=K, sigma=1.0, temperature=temperature).fit(X, y)
    grid = head.score_grid(X_val, y_val, k=ks, sigma=sigmas).to_pylist()
    cells, wrong_cells = [], []
    for kk in ks:
        for s in sigmas:
            want = oracle(X, y, X_val, s, temperature, k=kk)
            cells.append((kk, s, float((want["scores"].argmax(1) == y_val).mean())))
            w_wrong = np.exp(-want["dist"] * s) / np.exp(-want["dist"] * s).sum(1, keepdims=True)
            wrong = want["base"] + np.einsum("nk,nkc->nc", w_wrong, want["residual"][want["pos"]])
            wrong_cells.append(float((wrong.argmax(1) == y_val).mean()))
    assert [(row["k"], row["sigma"]) for row in grid] == [(kk, s) for kk, s, _ in cells]
    np.testing.assert_allclose([row["score"] for row in grid], [c[2] for c in cells], atol=1e-12)
    assert [c[2] for c in cells] != wrong_cells  # exp(-d·σ) scores differently on this grid

    # regression: R² is continuous, so every cell sees a wrong weight
    target = X[:, 0] * 2 - X[:, 1]  # (N_TRAIN,)
    target_val = X_val[:, 0] * 2 - X_val[:, 1]
    reg = ResMem(tiny_mlp(n_out=1), k=K, sigma=1.0, temperature=temperature, task="regression").fit(X, target)
    grid = reg.score_grid(X_val, target_val, k=ks, sigma=sigmas).to_pylist()
    f, emb = by_hand(tiny_mlp(n_out=1), X)
    residual = target - f[:, 0]  # (N_TRAIN,): y - f(x), no temperature
    f_val, emb_val = by_hand(tiny_mlp(n_out=1), X_val)
    want = []
    for kk in ks:
        dist, pos = brute_force(emb_val, emb, kk)
        for s in sigmas:
            pred = f_val[:, 0] + (weights(dist, s) * residual[pos]).sum(1)  # (200,)
            want.append(1 - ((target_val - pred) ** 2).sum() / ((target_val - target_val.mean()) ** 2).sum())
    np.testing.assert_allclose([row["score"] for row in grid], want, atol=1e-5)
    assert np.ptp(want) > 1e-2  # k and σ change the score


@pytest.mark.parametrize("sigma", [0.3, 4.0])
def test_regression_predicts_f_plus_the_weighted_residuals_y_minus_f(data, sigma):
    X, _, Q = data
    target = np.stack([X[:, 0] * 2 - X[:, 1], X[:, 2] ** 2], 1)  # (N_TRAIN, 2): two outputs
    model = tiny_mlp(n_out=2)
    head = ResMem(model, k=K, sigma=sigma, temperature=2.0, task="regression").fit(X, target)
    f, emb = by_hand(model, X)
    residual = target - f  # (N_TRAIN, 2)
    np.testing.assert_allclose(head.residuals_, residual, atol=1e-5)
    f_q, emb_q = by_hand(model, Q)
    dist, pos = brute_force(emb_q, emb, K)
    want = f_q + np.einsum("nk,nkc->nc", weights(dist, sigma), residual[pos])  # (N_QUERY, 2)
    np.testing.assert_allclose(head.predict(Q), want, atol=1e-5)
    np.testing.assert_allclose(head.decision_function(Q), want, atol=1e-5)
    t = head.explain(Q)
    contribution = weights(dist, sigma) * residual[pos, 0]  # (N_QUERY, K): the first output
    np.testing.assert_allclose(t["contribution"].to_numpy().reshape(N_QUERY, K), contribution, atol=1e-5)

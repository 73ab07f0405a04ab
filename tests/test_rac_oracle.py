"""RAC against an independent oracle: the fusion and the logit-adjusted loss written out by hand.

The oracle finds each input's neighbours by brute force (1 - cos, the memory's
cosine distance; a training row left out of its own), turns their labels into
tokens itself (the sorted label texts), calls the two branches' torch modules
directly, and fuses them as Long et al. 2022,

    f(x) = L/2 (f_ret(x)/||f_ret(x)|| + f_base(x)/||f_base(x)||),

and writes the training loss of Menon et al. 2021 out,

    loss = mean_i CE(f(x_i) + τ log π, y_i),   π the class prior of the training labels,

with a prior far from uniform and τ = 1.5, so a flipped sign, a missing log
or a missing term each change it (the tests check that they would).
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import memstore
from memstore.heads.rac import RACClassifier

N, N_TEST, DIM, N_BASE, K = 60, 9, 8, 5, 4
TAU = 1.5
PRIOR = np.array([0.6, 0.3, 0.1])  # far from uniform: log π differs a lot between classes
TINY = dict(k=K, width=16, heads=2, layers=1, logit_adjustment=TAU, lr=1e-2, random_state=3)


@pytest.fixture
def setting(tmp_path):
    """A memory of N labelled vectors (the training set) and separate base inputs X (N, 5)."""
    rng = np.random.default_rng(5)
    y = rng.choice(3, N, p=PRIOR)
    centers = np.random.default_rng(6).standard_normal((3, DIM)) * 2
    q = (centers[y] + rng.standard_normal((N, DIM))).astype(np.float32)  # (N, DIM) queries = memory rows
    X = rng.standard_normal((N, N_BASE)).astype(np.float32)  # (N, 5): what the base branch sees
    mem = memstore.open(tmp_path / "rac.mem")
    ids = mem.add(q, [f"class {c}" for c in y]).ids
    return mem, ids, q, X, y


def cosine_neighbours(queries, rows, k, leave_out_self=False):
    """(distances, positions) (n, k) by brute force, nearest first; 1 - cos as the memory's metric."""
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    rn = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    d = 1 - qn.astype(np.float64) @ rn.T.astype(np.float64)  # (n, rows)
    if leave_out_self:
        np.fill_diagonal(d, np.inf)  # training row i is memory row i
    pos = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, pos, 1), pos


def tokens_of(labels, pos):
    """(n, k) tokens: the index of each neighbour's label text among the sorted label texts."""
    texts = np.array([f"class {c}" for c in labels])
    vocabulary = sorted(set(texts))
    return np.searchsorted(vocabulary, texts)[pos], vocabulary


def fuse(model, x, tokens, dist) -> tuple[np.ndarray, np.ndarray, float]:
    """(base part, retrieval part) (n, classes) and L, from the branches' modules, fused by hand."""
    f_base = model.base(torch.as_tensor(x)).double().numpy()  # (n, classes)
    f_ret = model.retrieval(torch.as_tensor(tokens), torch.as_tensor(dist, dtype=torch.float32)).double().numpy()
    L = float(model.log_scale.exp())
    unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)  # noqa: E731
    return L / 2 * unit(f_base), L / 2 * unit(f_ret), L


def cross_entropy(z, y):
    """mean_i -log softmax(z_i)[y_i], z (n, classes)."""
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def without_dropout(model: nn.Module) -> None:
    """Dropout off (the transformer's and its attention's), so training logits depend on the parameters alone."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0


@pytest.mark.parametrize("scale", [None, 3.0])
def test_fused_logits_are_half_L_times_the_sum_of_the_unit_branch_outputs(setting, scale):
    mem, ids, q, X, y = setting
    rac = RACClassifier(mem, scale=scale, epochs=3, batch_size=16, **TINY).fit(X, y, queries=q, memory_ids=ids)
    rng = np.random.default_rng(8)
    q_test = q[rng.choice(N, N_TEST)] + 0.3 * rng.standard_normal((N_TEST, DIM)).astype(np.float32)
    X_test = rng.standard_normal((N_TEST, N_BASE)).astype(np.float32)
    dist, pos = cosine_neighbours(q_test, q, K)  # at prediction time no row is left out
    tokens, vocabulary = tokens_of(y, pos)
    assert rac.vocabulary_ == vocabulary
    _, neighbour_ids = rac.kneighbors(X_test, queries=q_test)
    assert neighbour_ids.tolist() == ids[pos].tolist()
    with torch.no_grad():
        base, ret, L = fuse(rac.model_, X_test, tokens, dist)
    if scale is None:
        assert abs(L - 10.0) > 1e-3  # learned: it moved from its start
    else:
        assert L == pytest.approx(scale, rel=1e-6) and not rac.model_.log_scale.requires_grad
    fused = base + ret  # (N_TEST, classes); predictions use the plain logits, no τ log π
    np.testing.assert_allclose(rac.decision_function(X_test, queries=q_test), fused, atol=1e-5)
    got_base, got_ret = rac.decision_parts(X_test, queries=q_test)
    np.testing.assert_allclose(got_base, base, atol=1e-5)
    np.testing.assert_allclose(got_ret, ret, atol=1e-5)
    # each part lies on the sphere of radius L/2, whatever the branches' own scales
    np.testing.assert_allclose(np.linalg.norm(got_base, axis=1), L / 2, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got_ret, axis=1), L / 2, rtol=1e-5)
    e = np.exp(fused - fused.max(1, keepdims=True))
    np.testing.assert_allclose(rac.predict_proba(X_test, queries=q_test), e / e.sum(1, keepdims=True), atol=1e-5)
    assert rac.predict(X_test, queries=q_test).tolist() == rac.classes_[fused.argmax(1)].tolist()
    # the branches are not unit-norm by themselves, so a missing normalisation would show
    with torch.no_grad():
        raw = rac.model_.base(torch.as_tensor(X_test)).double().numpy()
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).max() > 1e-2


def test_training_reads_the_hand_found_neighbours_and_minimises_the_logit_adjusted_loss(setting, monkeypatch):
    mem, ids, q, X, y = setting
    seen = {}
    train = RACClassifier._train

    def observed(self, X_, target, tokens, dist):
        # the model as it is before the first step is what the first loss is computed with
        without_dropout(self.model_)
        seen.update(target=target, tokens=tokens, dist=dist, initial=copy.deepcopy(self.model_))
        return train(self, X_, target, tokens, dist)

    monkeypatch.setattr(RACClassifier, "_train", observed)
    # one epoch of one batch: the recorded loss is the loss at the initial parameters
    rac = RACClassifier(mem, epochs=1, batch_size=N, **TINY).fit(X, y, queries=q, memory_ids=ids)

    dist, pos = cosine_neighbours(q, q, K, leave_out_self=True)  # (N, K)
    tokens, _ = tokens_of(y, pos)
    assert seen["target"].tolist() == y.tolist()  # classes_ are 0, 1, 2
    assert seen["tokens"].tolist() == tokens.tolist()
    np.testing.assert_allclose(seen["dist"], dist, atol=1e-5)
    # the branch standardises distances with the training neighbours' mean and std
    np.testing.assert_allclose(rac.model_.retrieval.distance_stats.numpy(), [dist.mean(), dist.std() + 1e-6],
                               rtol=1e-4)

    model = seen["initial"].train()
    with torch.no_grad():
        base, ret, _ = fuse(model, X, tokens, dist)
    logits = base + ret  # (N, classes)
    prior = np.bincount(y, minlength=3) / N  # (classes,): the training labels' frequencies
    loss = cross_entropy(logits + TAU * np.log(prior), y)
    assert rac.history_[0] == pytest.approx(loss, rel=1e-5)
    # τ, the prior and the sign are where the wrong losses differ, so the comparison above can fail
    for wrong in (logits - TAU * np.log(prior), logits, logits + np.log(prior), logits + TAU * prior):
        assert abs(cross_entropy(wrong, y) - loss) > 1e-3


def test_the_first_step_follows_the_gradient_of_the_hand_written_loss(setting, monkeypatch):
    mem, ids, q, X, y = setting
    seen = {}
    step = torch.optim.AdamW.step

    def observed(self, *args, **kwargs):
        # the gradient the optimiser receives at its first step, per parameter
        if "grads" not in seen:
            seen["grads"] = [p.grad.detach().clone() for group in self.param_groups for p in group["params"]]
        return step(self, *args, **kwargs)

    train = RACClassifier._train

    def no_dropout(self, X_, target, tokens, dist):
        without_dropout(self.model_)
        seen["initial"] = copy.deepcopy(self.model_)
        return train(self, X_, target, tokens, dist)

    monkeypatch.setattr(torch.optim.AdamW, "step", observed)
    monkeypatch.setattr(RACClassifier, "_train", no_dropout)
    RACClassifier(mem, epochs=1, batch_size=N, **TINY).fit(X, y, queries=q, memory_ids=ids)

    model = seen["initial"].train()
    dist, pos = cosine_neighbours(q, q, K, leave_out_self=True)
    tokens, _ = tokens_of(y, pos)
    f_base = model.base(torch.as_tensor(X))  # (N, classes)
    f_ret = model.retrieval(torch.as_tensor(tokens), torch.as_tensor(dist, dtype=torch.float32))
    L = model.log_scale.exp()
    logits = L / 2 * (f_base / f_base.norm(dim=1, keepdim=True) + f_ret / f_ret.norm(dim=1, keepdim=True))
    log_prior = torch.log(torch.as_tensor(np.bincount(y, minlength=3) / N, dtype=torch.float32))
    z = logits + TAU * log_prior  # (N, classes)
    loss = (torch.logsumexp(z, 1) - z[torch.arange(N), torch.as_tensor(y)]).mean()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    assert len(grads) == len(seen["grads"])
    for want, got in zip(grads, seen["grads"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert float(grads[0].abs().max()) > 1e-3  # a gradient that is there to be got wrong

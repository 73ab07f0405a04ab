"""KNNClassifier: votings, ties, weights, leave-one-out, attribution and exact reproduction."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier

import memstore
from memstore.errors import InvalidInputError
from memstore.heads.knn import vote_weights


@pytest.fixture
def blobs(mem, rng):
    """600 rows around 4 centres in 16-d, labels 0..3, with a uri each; 200 queries."""
    centres = rng.standard_normal((4, 16)) * 2
    y = rng.integers(0, 4, 800)
    x = (centres[y] + rng.standard_normal((800, 16))).astype(np.float32)
    mem.add(x[:600], y[:600], provenance={"uri": [f"img/{i}.png" for i in range(600)], "split": "train"})
    return mem, x[:600], y[:600], x[600:], y[600:]


def test_vote_weights_follow_the_documented_formulas():
    d = np.array([[0.1, 0.3, 0.6]])
    np.testing.assert_allclose(vote_weights("plurality", d), [[1, 1, 1]])
    np.testing.assert_allclose(vote_weights("distance", d), np.exp(-d))
    np.testing.assert_allclose(vote_weights("distance", d, power=2), np.exp(-d) ** 2)
    np.testing.assert_allclose(vote_weights("softmax", d), np.exp((1 - d) / 0.07))
    np.testing.assert_allclose(vote_weights("rank", d), [[1 / 2, 1 / 3, 1 / 4]])
    big = vote_weights("softmax", np.array([[-100.0, -99.0]]))  # dot metric: would overflow
    assert np.isfinite(big).all() and big[0, 0] > big[0, 1]


def test_plurality_agrees_with_scikit_learn(blobs):
    mem, _, _, q, _ = blobs
    for k in (1, 5, 15):  # odd k, four classes: ties are possible, so compare where there are none
        ours = memstore.KNNClassifier(k=k, voting="plurality").fit(mem)
        theirs = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(mem.samples.vectors,
                                                                                mem.samples.labels.to_numpy())
        counts = np.sort(theirs.predict_proba(q), axis=1)
        no_tie = counts[:, -1] > counts[:, -2]
        assert no_tie.mean() > 0.9
        np.testing.assert_array_equal(ours.predict(q)[no_tie], theirs.predict(q)[no_tie])
        np.testing.assert_allclose(ours.predict_proba(q), theirs.predict_proba(q))
        d_ours, i_ours = ours.kneighbors(q)
        d_theirs, i_theirs = theirs.kneighbors(q)
        np.testing.assert_array_equal(i_ours, i_theirs)
        np.testing.assert_allclose(d_ours, d_theirs, atol=1e-5)


@pytest.mark.parametrize("voting", ["plurality", "distance", "softmax", "rank"])
def test_every_voting_classifies_separable_data(blobs, voting):
    mem, _, _, q, yq = blobs
    clf = memstore.KNNClassifier(k=10, voting=voting).fit(mem)
    assert clf.score(q, yq) > 0.9
    proba = clf.predict_proba(q)
    np.testing.assert_allclose(proba.sum(1), 1)
    assert proba.shape == (len(q), 4) and clf.classes_.tolist() == [0, 1, 2, 3]


def test_a_tie_goes_to_the_class_of_the_nearest_neighbour(mem):
    mem.add(np.array([[1, 0], [0.9, 0.5], [0, 1], [0.5, 0.9]], np.float32), ["b", "a", "a", "b"])
    clf = memstore.KNNClassifier(k=2, voting="plurality").fit(mem)
    # near row 0 ('b') then row 1 ('a'): one vote each, the nearer wins even though 'a' sorts first
    assert clf.predict(np.array([[1, 0.1]], np.float32)).tolist() == ["b"]
    assert clf.predict(np.array([[0.1, 1]], np.float32)).tolist() == ["a"]


def test_row_weights_scale_the_votes(mem):
    mem.add(np.array([[1, 0], [0.99, 0.1], [0.98, 0.15]], np.float32), ["a", "b", "b"])
    q = np.array([[1, 0]], np.float32)
    assert memstore.KNNClassifier(k=3, voting="plurality").fit(mem).predict(q).tolist() == ["b"]
    mem.reweight("SELECT id, 3.0 AS weight FROM samples WHERE label = 'a'")
    clf = memstore.KNNClassifier(k=3, voting="plurality").fit(mem)
    assert clf.predict(q).tolist() == ["a"]
    np.testing.assert_allclose(clf.predict_proba(q), [[0.6, 0.4]])
    unweighted = memstore.KNNClassifier(k=3, voting="plurality", use_weights=False).fit(mem)
    assert unweighted.predict(q).tolist() == ["b"]


def test_all_zero_weights_give_uniform_probabilities_and_the_nearest_class(mem):
    mem.add(np.array([[1, 0], [0, 1], [0.7, 0.7]], np.float32), ["a", "b", "c"], weights=0.0)
    clf = memstore.KNNClassifier(k=3).fit(mem)
    q = np.array([[0.1, 1]], np.float32)
    np.testing.assert_allclose(clf.predict_proba(q), [[1 / 3] * 3])
    assert clf.predict(q).tolist() == ["b"]


def test_leave_one_out_excludes_each_row_itself(blobs):
    mem, x, y, _, _ = blobs
    clf = memstore.KNNClassifier(k=5, voting="plurality").fit(mem)
    dist, ids = clf.kneighbors(None)
    assert ids.shape == (600, 5) and not (ids == np.arange(600)[:, None]).any()
    theirs = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(x, y)
    np.testing.assert_array_equal(ids, theirs.kneighbors(None)[1])  # sklearn's X=None is leave-one-out too
    loo = clf.predict(None)
    assert loo.shape == (600,) and (loo == y).mean() > 0.9


def test_explain_attributes_each_decision_to_its_rows(blobs):
    mem, _, _, q, _ = blobs
    clf = memstore.KNNClassifier(k=7, voting="rank").fit(mem)
    ex = clf.explain(q[:5])
    for name in ("query", "rank", "id", "label", "distance", "vote_weight", "share", "supports",
                 "predicted", "uri", "split", "content_hash", "memory_version"):
        assert name in ex.column_names
    assert ex.num_rows == 5 * 7
    df = ex.to_pandas()
    np.testing.assert_allclose(df.groupby("query")["share"].sum(), 1)
    proba = clf.predict_proba(q[:5])
    support = df[df.supports].groupby("query")["share"].sum().to_numpy()
    np.testing.assert_allclose(support, proba.max(1))
    assert (df.predicted.to_numpy().reshape(5, 7)[:, 0] == clf.predict(q[:5])).all()
    assert set(df.memory_version) == {mem.version}
    # provenance read from the store matches what SQL says about the same rows
    joined = mem.sql("SELECT e.id, e.uri AS said, s.uri AS stored, s.label = e.label AS same "
                     "FROM e JOIN samples s USING (id)", e=ex).df()
    assert len(joined) == ex.num_rows
    assert (joined.said == joined.stored).all() and joined.same.all()


def test_a_table_cannot_shadow_the_memory_tables(filled):
    with pytest.raises(InvalidInputError, match="cannot be named 'samples'"):
        filled.sql("SELECT 1", samples=filled.versions())


def test_a_prediction_is_reproduced_at_its_version(blobs, rng):
    mem, x, _, q, _ = blobs
    clf = memstore.KNNClassifier(k=9, voting="softmax").fit(mem)
    version = clf.memory_version_
    before, explained = clf.predict_proba(q), clf.explain(q[:3])
    # the memory moves on: new rows, pruned rows, new weights and labels
    mem.add(x[:100] + 0.01, rng.integers(0, 4, 100), provenance={"split": "late"})
    mem.prune("SELECT id FROM samples WHERE id < 50")
    mem.reweight("SELECT id, 0.1 AS weight FROM samples WHERE id % 2 = 0")
    assert not np.allclose(memstore.KNNClassifier(k=9, voting="softmax").fit(mem).predict_proba(q), before)
    np.testing.assert_array_equal(clf.predict_proba(q), before)  # the fitted head stays at its version
    again = memstore.KNNClassifier(k=9, voting="softmax").fit(mem.at(version))
    np.testing.assert_array_equal(again.predict_proba(q), before)
    assert again.explain(q[:3]).equals(explained)


def test_string_and_integer_labels_and_arrays(rng):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = np.array(["x", "y"])[np.arange(50) % 2]
    clf = memstore.KNNClassifier(k=1).fit(x, y)
    assert clf.predict(x[:4]).tolist() == ["x", "y", "x", "y"]
    assert clf.explain(x[:1])["memory_version"].null_count == 1
    assert memstore.KNNClassifier(k=1).fit(x, np.arange(50) % 3).predict(x[:3]).tolist() == [0, 1, 2]


def test_scikit_learn_contract(blobs):
    mem, *_ = blobs
    clf = memstore.KNNClassifier(k=3, voting="distance", temperature=0.1)
    assert clf.get_params()["voting"] == "distance"
    assert clone(clf).set_params(k=4).k == 4
    with pytest.raises(NotFittedError):
        clf.predict(np.zeros((1, 16), np.float32))
    assert clf.fit(mem) is clf
    assert clf.n_samples_fit_ == 600 and clf.n_features_in_ == 16 and clf.ids_.shape == (600,)


@pytest.mark.parametrize("params, match", [
    ({"voting": "majority"}, "'majority' is not one of"),
    ({"k": 0}, "positive integer"),
    ({"k": 601}, "k = 601, n_samples_fit = 600"),
    ({"temperature": 0}, "temperature must be positive"),
    ({"metric": "hamming"}, "'hamming' is not one of"),
])
def test_bad_parameters_are_refused_at_fit(blobs, params, match):
    mem, *_ = blobs
    with pytest.raises(InvalidInputError, match=match):
        memstore.KNNClassifier(**params).fit(mem)


def test_fitting_an_empty_memory_or_passing_labels_with_a_memory_is_refused(mem, blobs):
    with pytest.raises(InvalidInputError, match="no rows"):
        memstore.KNNClassifier(k=1).fit(mem.at(0))
    with pytest.raises(InvalidInputError, match="do not pass y"):
        memstore.KNNClassifier(k=1).fit(mem, [1, 2])


def test_queries_of_the_wrong_dimension_are_refused(blobs):
    mem, *_ = blobs
    clf = memstore.KNNClassifier(k=3).fit(mem)
    with pytest.raises(memstore.DimensionMismatchError, match="dimension 8"):
        clf.predict(np.zeros((2, 8), np.float32))


def test_unlabelled_pruned_and_relabelled_rows(blobs):
    mem, _, _, q, _ = blobs
    mem.relabel("SELECT id, 9 AS label FROM samples WHERE id < 10")
    mem.prune("SELECT id FROM samples WHERE id >= 10 AND id < 20")
    clf = memstore.KNNClassifier(k=5).fit(mem)
    assert 9 in clf.classes_.tolist() and clf.n_samples_fit_ == 590
    ids = clf.kneighbors(q)[1]
    assert not np.isin(ids, np.arange(10, 20)).any()

"""memstore.connect: a served memory read from another process, and a kNN head fitted on it.

The server is real (uvicorn on 127.0.0.1 in a thread); every answer is checked against the same
read on the local memory.
"""

import numpy as np
import pytest
from serving import serving

import memstore
from memstore.errors import InvalidInputError, ReadOnlyError, SQLError, UnknownIdsError, VersionNotFoundError
from memstore.server import create_app

TOKEN = "a-secret-of-sixteen-or-more"


@pytest.fixture
def remote(served):
    with serving(create_app(served.path, tokens={"model": TOKEN})) as url:
        yield memstore.connect(url, token=TOKEN)


def test_sql_versions_and_info_read_the_served_memory(remote, served):
    got = remote.sql("SELECT label, count(*) AS n FROM samples GROUP BY label ORDER BY label")
    assert got.to_pylist() == served.sql("SELECT label, count(*) AS n FROM samples GROUP BY label "
                                         "ORDER BY label").to_arrow_table().to_pylist()
    assert remote.versions()["operation"].to_pylist() == served.versions()["operation"].to_pylist()
    assert remote.version == served.version == 3 and len(remote) == 300
    assert remote.at("first").sql("SELECT count(*) AS n FROM samples WHERE label = 'owl' AND id < 5") \
        .to_pylist() != remote.sql("SELECT count(*) AS n FROM samples WHERE label = 'owl' AND id < 5").to_pylist()


def test_search_equals_the_local_search(remote, served, rng):
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    got, want = remote.search(queries, k=5), served.search(queries, k=5)
    assert got["id"].to_pylist() == want["id"].to_pylist()
    assert got["label"].to_pylist() == want["label"].to_pylist()
    np.testing.assert_allclose(got["distance"].to_numpy(), want["distance"].to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("voting", ["rank", "distance"])
def test_a_head_fitted_on_the_client_decides_as_one_fitted_locally(remote, served, rng, voting):
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    far = memstore.KNNClassifier(k=7, voting=voting).fit(remote)
    near = memstore.KNNClassifier(k=7, voting=voting).fit(served)
    assert far.memory_version_ == near.memory_version_ == 3
    assert list(far.classes_) == list(near.classes_)
    assert far.predict(queries).tolist() == near.predict(queries).tolist()
    np.testing.assert_allclose(far.predict_proba(queries), near.predict_proba(queries), rtol=1e-5)
    np.testing.assert_array_equal(far.kneighbors(queries)[1], near.kneighbors(queries)[1])
    # leave-one-out over the memory's own rows, and query by example: searched on the server by id
    assert far.predict().tolist() == near.predict().tolist()
    got, want = far.explain(ids=[10, 20]), near.explain(ids=[10, 20])
    assert got["id"].to_pylist() == want["id"].to_pylist()
    np.testing.assert_allclose(got["share"].to_numpy(), want["share"].to_numpy(), rtol=1e-5)


def test_a_head_fitted_on_a_version_stays_there_while_the_memory_moves_on(remote, served, rng):
    queries = rng.standard_normal((10, 16)).astype(np.float32)
    pinned = memstore.KNNClassifier(k=5).fit(remote.at(1))
    before = pinned.predict(queries)
    served.relabel("SELECT id, 'dog' AS label FROM samples")  # every row: any decision would change
    served.add(queries, ["owl"] * 10)  # the queries themselves, as the nearest rows
    assert pinned.predict(queries).tolist() == before.tolist()
    assert pinned.predict(queries).tolist() == memstore.KNNClassifier(k=5).fit(served.at(1)).predict(queries).tolist()
    newest = memstore.KNNClassifier(k=5).fit(remote)  # an unpinned client: the newest version
    assert newest.memory_version_ == 5 and (newest.kneighbors(queries, k=1)[1][:, 0] >= 300).all()


def test_classify_and_explain_are_the_servers_head(remote, served, rng):
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    predicted, proba, classes = remote.classify(queries, k=9)
    head = memstore.KNNClassifier(k=9).fit(served)
    assert predicted.tolist() == head.predict(queries).tolist() and classes == list(head.classes_)
    np.testing.assert_allclose(proba, head.predict_proba(queries), rtol=1e-5)
    decisions = remote.explain(queries, k=9)
    table = head.explain(queries)
    assert [d["predicted"] for d in decisions] == predicted.tolist()
    assert [n["id"] for d in decisions for n in d["neighbours"]] == table["id"].to_pylist()
    for d, p in zip(decisions, proba):  # the shares of each label add up to its probability
        assert d["probabilities"] == pytest.approx({c: q for c, q in zip(classes, p) if q > 0})


def test_errors_come_back_as_memstores_own(remote, served):
    with pytest.raises(ReadOnlyError, match="read-only"):
        remote.sql("DELETE FROM samples")
    with pytest.raises(SQLError):
        remote.sql("SELECT nothing FROM nowhere")
    with pytest.raises(VersionNotFoundError):
        remote.at(99)
    with pytest.raises(UnknownIdsError, match="5000"):
        remote.explain(ids=[5000], k=3)
    with pytest.raises(InvalidInputError, match="16 components"):
        remote.search(np.zeros((1, 8), np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        remote.search(np.full((1, 16), np.nan, np.float32))


def test_a_server_with_a_token_refuses_a_client_without_it(served):
    with serving(create_app(served.path, tokens={"model": TOKEN})) as url:
        with pytest.raises(PermissionError, match="token"):
            memstore.connect(url)
        with pytest.raises(PermissionError, match="token"):
            memstore.connect(url, token="wrong-" + TOKEN)


def test_many_queries_go_in_requests_the_server_accepts(remote, served, rng):
    queries = rng.standard_normal((3000, 16)).astype(np.float32)  # > one request's 1,024 queries
    got = remote.search(queries, k=3)
    assert got["id"].to_pylist() == served.search(queries, k=3)["id"].to_pylist()


def test_explain_takes_ids_as_an_array_and_splits_what_the_server_bounds(remote, served):
    decisions = remote.explain(ids=np.arange(200), k=150)  # 30,000 neighbours: two requests
    assert len(decisions) == 200 and all(len(d["neighbours"]) == 150 for d in decisions)

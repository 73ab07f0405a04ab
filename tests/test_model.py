"""A model-based test: random sequences of writes against a plain-Python model of the memory.

Hypothesis drives a memory through add, prune, reweight, relabel, set_taxonomy,
restore, tag, at, forget and reopen, and keeps beside it what every version
should hold: {id: (label, weight)} of the rows alive at each version, the
taxonomy of each version, the tags, the operations of the commit log, and the
ids forgotten. After every step each version 0..head is read back through
``mem.at(v)`` and compared; at the end of a run ``mem.check()`` must pass.

The rules the model encodes (README "Flexible memory", Memory's docstrings):

- every write makes exactly one new version; a refused write makes none;
- prune removes rows from its version on, earlier versions keep them;
- restore(v) makes a version equal to v (rows, labels, weights, taxonomy),
  less the rows forgotten since;
- forget removes its ids from *every* version, earlier ones included, and no
  restore brings them back; ids pruned earlier may be forgotten;
- ids are never reused: the next id is the largest ever given + 1;
- tags name versions and make none.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import memstore
from memstore.errors import MemstoreError, SQLResultError, UnknownIdsError

DIM = 8
LABELS = ("a", "b", "c", "d")
COARSE = ("x", "y")
#: weights the SQL predicates compare with: exact in float32, so DuckDB and numpy agree
THRESHOLDS = (0.5, 1.0, 1.5)
ROWS_QUERY = "SELECT id, label, weight FROM samples ORDER BY id"

weights_st = st.floats(0.0, 2.0, allow_nan=False, allow_infinity=False)


def id_list(ids) -> str:
    return ", ".join(str(int(i)) for i in sorted(ids))


class MemoryModel(RuleBasedStateMachine):
    """A memory in a fresh directory, and what each of its versions should hold."""

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="memstore-model-"))
        self.path = self.dir / "model.mem"
        self.mem = memstore.open(self.path)
        self.states: list[dict[int, tuple[str, np.float32]]] = [{}]  # version -> {id: (label, weight)}
        self.taxonomies: list[dict[str, tuple[str | None, int]] | None] = [None]  # node -> (parent, level)
        self.ops = ["init"]
        self.rows_written = [0]  # rows_total each version had when it was written
        self.uris: dict[int, str] = {}
        self.vectors: dict[int, np.ndarray] = {}
        self.forgotten: set[int] = set()
        self.next_id = 0
        self.adds = 0
        self.tags: dict[str, int] = {}
        self.pinned: list[tuple[int, memstore.Memory]] = []  # handles from `at`, re-read each step
        self.wrote = True  # since the last check: then every version is read again

    # -- the model ---------------------------------------------------------------------
    @property
    def head(self) -> int:
        return len(self.states) - 1

    @property
    def live(self) -> dict[int, tuple[str, np.float32]]:
        return self.states[-1]

    def committed(self, version: int, op: str, state: dict, taxonomy="same") -> None:
        """The model's side of a write that made ``version``."""
        assert version == self.head + 1, f"{op} made version {version}, expected {self.head + 1}"
        self.states.append(state)
        self.taxonomies.append(self.taxonomies[-1] if taxonomy == "same" else taxonomy)
        self.ops.append(op)
        self.rows_written.append(len(state))
        self.wrote = True
        assert self.mem.version == version

    def expected_rows(self, version: int) -> list[tuple]:
        return [(i, label, float(w)) for i, (label, w) in sorted(self.states[version].items())]

    def refused(self, call, error) -> None:
        """A write that must raise ``error`` and leave the memory as it was."""
        before = self.mem.version
        with pytest.raises(error):
            call()
        assert isinstance(error, type) and issubclass(error, MemstoreError)
        assert self.mem.version == before == self.head
        assert memstore.open(self.path, create=False).version == before

    # -- writes --------------------------------------------------------------------------
    @initialize(labels=st.lists(st.sampled_from(LABELS), max_size=4), data=st.data(),
                seed=st.integers(0, 2**32 - 1), give_weights=st.booleans())
    def start(self, labels, data, seed, give_weights):
        """Most runs start with a few rows, so that prune/reweight/relabel/forget have work."""
        assert self.mem.version == 0 and len(self.mem) == 0
        if labels:
            self.add(labels, data, seed, give_weights)

    @rule(labels=st.lists(st.sampled_from(LABELS), min_size=1, max_size=4),
          data=st.data(), seed=st.integers(0, 2**32 - 1), give_weights=st.booleans())
    def add(self, labels, data, seed, give_weights):
        n = len(labels)
        x = np.random.default_rng([seed, self.adds]).standard_normal((n, DIM)).astype(np.float32)
        weights = data.draw(st.lists(weights_st, min_size=n, max_size=n)) if give_weights else None
        uris = [f"batch{self.adds}/{i}.png" for i in range(n)]
        self.adds += 1
        res = self.mem.add(x, labels, provenance={"uri": uris}, weights=weights,
                           message=f"add {n}")
        want_ids = list(range(self.next_id, self.next_id + n))
        assert res.ids.tolist() == want_ids, "ids are never reused: next id = max id ever + 1"
        assert res.rows == n
        state = dict(self.live)
        for k, i in enumerate(want_ids):
            w = np.float32(1.0) if weights is None else np.float32(weights[k])
            state[i] = (labels[k], w)
            self.uris[i] = uris[k]
            self.vectors[i] = x[k]
        self.next_id += n
        self.committed(res.version, "add", state)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), how=st.sampled_from(["ids", "sql_ids", "sql_uri"]))
    def prune(self, data, how):
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1, unique=True))
        if how == "ids":
            select = np.array(chosen, np.int64)
        elif how == "sql_ids":
            select = f"SELECT id FROM samples WHERE id IN ({id_list(chosen)})"
        else:  # through the provenance column: DuckDB joins the data table
            uris = ", ".join(f"'{self.uris[i]}'" for i in chosen)
            select = f"SELECT id FROM samples WHERE uri IN ({uris})"
        res = self.mem.prune(select, message="prune")
        assert res.rows == len(chosen)
        self.committed(res.version, "prune", {i: v for i, v in self.live.items() if i not in chosen})

    @precondition(lambda self: self.live)
    @rule(label=st.sampled_from(LABELS), threshold=st.sampled_from(THRESHOLDS))
    def prune_by_predicate(self, label, threshold):
        select = f"SELECT id FROM samples WHERE label = '{label}' AND weight <= {threshold}"
        chosen = {i for i, (lab, w) in self.live.items() if lab == label and w <= threshold}
        if not chosen:
            self.refused(lambda: self.mem.prune(select), SQLResultError)
            return
        res = self.mem.prune(select)
        assert res.rows == len(chosen)
        self.committed(res.version, "prune", {i: v for i, v in self.live.items() if i not in chosen})

    @precondition(lambda self: self.live)
    @rule(data=st.data(), how=st.sampled_from(["sql_const", "sql_values", "table"]))
    def reweight(self, data, how):
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1, unique=True))
        if how == "sql_const":
            w = data.draw(weights_st)
            new = {i: w for i in chosen}
            select = (f"SELECT id, CAST('{w!r}' AS DOUBLE) AS weight FROM samples "
                      f"WHERE id IN ({id_list(chosen)})")
        else:
            new = {i: data.draw(weights_st) for i in chosen}
            if how == "sql_values":
                values = ", ".join(f"({i}, CAST('{w!r}' AS DOUBLE))" for i, w in new.items())
                select = (f"SELECT s.id, v.w AS weight FROM samples s "
                          f"JOIN (VALUES {values}) AS v(id, w) ON s.id = v.id")
            else:
                select = pa.table({"id": pa.array(list(new), pa.int64()),
                                   "weight": pa.array(list(new.values()), pa.float64())})
        res = self.mem.reweight(select, message="reweight")
        assert res.rows == len(chosen)
        state = dict(self.live)
        for i, w in new.items():
            state[i] = (state[i][0], np.float32(w))
        self.committed(res.version, "reweight", state)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), label=st.sampled_from(LABELS), as_table=st.booleans())
    def relabel(self, data, label, as_table):
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1, unique=True))
        if as_table:
            select = pa.table({"id": pa.array(chosen, pa.int64()), "label": [label] * len(chosen)})
        else:
            select = f"SELECT id, '{label}' AS label FROM samples WHERE id IN ({id_list(chosen)})"
        res = self.mem.relabel(select, message="relabel")
        assert res.rows == len(chosen)
        state = dict(self.live)
        for i in chosen:
            state[i] = (label, state[i][1])
        self.committed(res.version, "relabel", state)

    @rule(parents=st.lists(st.sampled_from(COARSE), min_size=len(LABELS), max_size=len(LABELS)),
          nested=st.booleans())
    def set_taxonomy(self, parents, nested):
        # every label the memory can hold is a node, so the taxonomy is always accepted
        tree = {"x": None, "y": "x" if nested else None, **dict(zip(LABELS, parents))}
        level = {"x": 0, "y": 1 if nested else 0}
        model = {n: (p, level[n] if n in level else level[p] + 1) for n, p in tree.items()}
        res = self.mem.set_taxonomy(tree, message="taxonomy")
        self.committed(res.version, "set_taxonomy", dict(self.live), taxonomy=model)

    @rule(data=st.data())
    def restore(self, data):
        refs = list(range(self.head + 1)) + sorted(self.tags)
        ref = data.draw(st.sampled_from(refs))
        target = self.tags[ref] if isinstance(ref, str) else ref
        res = self.mem.restore(ref)
        self.committed(res.version, "restore", dict(self.states[target]),
                       taxonomy=self.taxonomies[target])

    @precondition(lambda self: set(range(self.next_id)) - self.forgotten)
    @rule(data=st.data(), by_sql=st.booleans())
    def forget(self, data, by_sql):
        # ids ever added and not yet forgotten: pruned ones may be forgotten too (by id)
        pool = sorted(set(self.live) if by_sql and self.live else set(range(self.next_id)) - self.forgotten)
        chosen = set(data.draw(st.lists(st.sampled_from(pool), min_size=1, unique=True)))
        alive = len(chosen & set(self.live))
        if by_sql and chosen <= set(self.live):
            select = f"SELECT id FROM samples WHERE id IN ({id_list(chosen)})"
        else:
            select = np.array(sorted(chosen), np.int64)
        report = self.mem.forget(select, message="forget")
        assert report.rows == len(chosen) and report.rows_alive == alive
        assert report.files_scanned > 0 and report.bytes_scanned > 0
        self.forgotten |= chosen
        for state in self.states:  # from every version, earlier ones included
            for i in chosen:
                state.pop(i, None)
        self.pinned = []  # handles opened before a forget must be opened again (Memory.forget)
        self.committed(report.version, "forget", dict(self.live))

    @rule(data=st.data(), kind=st.sampled_from(["prune_nothing", "prune_unknown", "forget_unknown"]))
    def refused_write(self, data, kind):
        """Writes that must raise and leave the memory as it was."""
        gone = sorted(set(range(self.next_id)) - set(self.live))  # pruned or forgotten
        never = [self.next_id, self.next_id + 7]  # never added
        if kind == "prune_nothing":
            self.refused(lambda: self.mem.prune("SELECT id FROM samples WHERE id < 0"), SQLResultError)
        elif kind == "prune_unknown":
            bad = data.draw(st.sampled_from(gone + never))
            ids = np.array(sorted(self.live)[:1] + [bad], np.int64)
            self.refused(lambda: self.mem.prune(ids), UnknownIdsError)
        elif self.adds:  # before the first add a forget raises ValueError, not UnknownIdsError
            # (see test_forget_before_any_add_is_unknown_ids below)
            bad = data.draw(st.sampled_from(sorted(self.forgotten) + never))
            ids = np.array(sorted(set(self.live) - self.forgotten)[:1] + [bad], np.int64)
            self.refused(lambda: self.mem.forget(ids), UnknownIdsError)

    # -- reading, naming, reopening -------------------------------------------------------
    @rule(data=st.data(), earlier=st.booleans())
    def tag(self, data, earlier):
        name = f"tag{len(self.tags)}"
        version = data.draw(st.integers(0, self.head)) if earlier else None
        got = self.mem.tag(name, version=version)
        want = self.head if version is None else version
        assert got == want
        self.tags[name] = want
        assert self.mem.version == self.head, "a tag makes no version"
        # a fresh handle: mem.sql's own `tags` table is read once per handle (see
        # test_sql_sees_a_tag_made_through_the_same_handle below)
        sql_tags = self.mem.at(self.head).sql("SELECT name, version FROM tags").fetchall()
        assert dict(sql_tags) == self.tags

    @rule(data=st.data())
    def at(self, data):
        ref = data.draw(st.sampled_from(list(range(self.head + 1)) + sorted(self.tags)))
        version = self.tags[ref] if isinstance(ref, str) else ref
        old = self.mem.at(ref)
        assert old.version == version and old.read_only
        self.check_handle(old, version)
        if self.adds:  # provenance columns come with the first add
            uris = old.sql("SELECT id, uri FROM samples ORDER BY id").fetchall()
            assert uris == [(i, self.uris[i]) for i in sorted(self.states[version])]
        self.pinned = (self.pinned + [(version, old)])[-3:]

    @rule()
    def reopen(self):
        self.mem = memstore.open(self.path, create=False)
        assert self.mem.version == self.head
        self.wrote = True

    # -- what must hold after every step --------------------------------------------------
    def check_handle(self, handle, version: int) -> None:
        got = handle.sql(ROWS_QUERY).fetchall()
        assert got == self.expected_rows(version), f"rows at version {version}"
        assert len(handle) == len(self.states[version])
        assert not {row[0] for row in got} & self.forgotten, f"a forgotten id is visible at {version}"
        taxonomy = {r["node"]: (r["parent"], r["level"]) for r in handle.taxonomy().to_pylist()}
        assert taxonomy == (self.taxonomies[version] or {}), f"taxonomy at version {version}"

    @invariant()
    def every_version_matches_the_model(self):
        mem = self.mem
        assert mem.version == self.head and not mem.read_only
        # a fresh handle per version (one DuckDB connection each, ~60 ms): every version
        # after a write, reopen or forget; after a step that wrote nothing (tag, at, a
        # refused write), the head
        for v in range(self.head + 1) if self.wrote else [self.head]:
            self.check_handle(mem.at(v), v)
        self.wrote = False
        for v, handle in self.pinned:  # pinned handles never see later writes
            self.check_handle(handle, v)

    def check_head_data(self, live: list[int]) -> None:
        got = self.mem.sql("SELECT id, uri, vector FROM samples ORDER BY id").to_arrow_table()
        assert got["id"].to_pylist() == live
        assert got["uri"].to_pylist() == [self.uris[i] for i in live]
        if live:
            vectors = np.stack(got["vector"].to_numpy(zero_copy_only=False))
            np.testing.assert_array_equal(vectors, np.stack([self.vectors[i] for i in live]))

    @invariant()
    def head_rows_log_and_tags_match(self):
        mem = self.mem
        live = sorted(self.live)
        if self.adds:  # provenance columns come with the first add
            self.check_head_data(live)
        versions = mem.versions()
        assert versions["version"].to_pylist() == list(range(self.head + 1))
        assert versions["operation"].to_pylist() == self.ops
        assert versions["rows"].to_pylist() == self.rows_written
        tags = mem.tags()
        assert dict(zip(tags["name"].to_pylist(), tags["version"].to_pylist())) == self.tags

    def teardown(self):
        try:
            report = self.mem.check()  # reads every file: once a run, at its end
            assert report.problems == [] and report.rows == len(self.live)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_memory_matches_model():
    run_state_machine_as_test(MemoryModel, settings=settings(max_examples=10, stateful_step_count=10, **COMMON))


@pytest.mark.slow
def test_memory_matches_model_long():
    run_state_machine_as_test(MemoryModel, settings=settings(max_examples=40, stateful_step_count=20, **COMMON))


# -- bugs the model found (fixed) ----------------------------------------------------------------
def test_sql_sees_a_tag_made_through_the_same_handle(mem):
    mem.add(np.ones((2, 4), np.float32), ["a", "b"])
    mem.sql("SELECT count(*) FROM samples").fetchall()  # the handle's SQL tables are now built
    mem.tag("clean")
    assert mem.tags()["name"].to_pylist() == ["clean"]
    assert mem.sql("SELECT name, version FROM tags").fetchall() == [("clean", 1)]


def test_forget_before_any_add_is_unknown_ids(mem):
    with pytest.raises(UnknownIdsError):
        mem.forget(np.array([0], np.int64))
    assert mem.version == 0

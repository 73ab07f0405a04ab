"""The estimator contract of the heads, checked the way scikit-learn checks its own estimators.

Two parts:

* scikit-learn's ``parametrize_with_checks`` on every head that fits on plain
  arrays: ``KNNClassifier`` (fits on X, y as well as on a memory); ``ResMem``
  with a tiny base model that reads any number of features (``Summary``, its
  temporary memories under pytest's tmp_path); ``RACClassifier`` over a small
  memory in a temporary folder, with a query encoder (``SummaryEncoder``) that
  maps inputs of any width into the memory's 2-d space. ``KNNLM`` is left out:
  it wraps a causal LM and has no ``fit``.
* memstore's own contract over every head: use before ``fit`` raises
  ``NotFittedError``; every declared constraint refuses a bad value at ``fit``
  with ``InvalidInputError`` naming the parameter and the value (KNNLM: at
  construction); ``get_params`` / ``set_params`` / ``clone`` round-trip.

Checks that do not apply (marked as expected failures, reasons in EXPECTED_FAILURES)
------------------------------------------------------------------------------------
KNNClassifier
    check_sample_weight_equivalence_on_dense_data: a weight multiplies a
    row's vote, while a repeated row also takes one of the k neighbour places.
    check_n_features_in_after_fitting: the wrong width is refused by memstore's
    DimensionMismatchError in memstore's words, not scikit-learn's.
    check_fit2d_predict1d: one vector is one query, by design.
    check_fit2d_1sample: k > 1 rows is refused at fit, in memstore's words.
ResMem and RACClassifier (X is the torch base model's input: features, images, token ids)
    check_n_features_in, check_n_features_in_after_fitting: no n_features_in_.
    check_complex_data, check_dtype_object, check_estimators_empty_data_messages,
    check_estimator_sparse_array, check_estimator_sparse_matrix, check_fit1d,
    check_fit2d_predict1d, check_classifier_data_not_an_array,
    check_classifiers_train: X is not run through check_array.
    check_estimators_pickle: a fitted head holds an open memory.
ResMem
    check_estimators_overwrite_params: joblib.hash of a deep-copied torch
    module differs from the module's own (test_fit_leaves_the_base_model_s_weights_alone).
RACClassifier
    check_classifiers_classes, check_decision_proba_consistency:
    decision_function is (n, classes) for two classes too.
    check_classifiers_regression_target, check_supervised_y_2d,
    check_requires_y_none, check_fit2d_1sample: y is not checked as
    scikit-learn's classifiers check it.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError, generate_invalid_param_val, make_constraint
from sklearn.utils.estimator_checks import parametrize_with_checks

import memstore
from memstore.errors import InvalidInputError
from memstore.heads.knn import KNNClassifier
from memstore.heads.knnlm import KNNLM, build_datastore
from memstore.heads.rac import RACClassifier
from memstore.heads.resmem import ResMem

#: the memory RACClassifier reads, relative to the folder the ``rac_memory`` fixture makes and moves into
#: before any test of this file runs (relative: the test ids, which show it, stay the same from run to run)
RAC_MEMORY = "rac.mem"


def summary(x: torch.Tensor | np.ndarray):
    """(n, 2): the mean and the first feature of each row, whatever the width of X."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float().reshape(len(x), -1)
    return torch.stack([x.mean(1), x[:, 0]], 1)


class Summary(torch.nn.Module):
    """A tiny base model for ResMem: an MLP on ``summary(X)``, one output (regression)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))

    def forward(self, x):
        return self.net(summary(x))


class SummaryEncoder:
    """RACClassifier's query encoder: X of any width into the memory's 2-d space.

    A plain object, not a torch module: check_estimators_overwrite_params
    cannot compare torch parameters (see ResMem's expected failures).
    """

    def encode(self, X):
        return summary(X).numpy()

    def __repr__(self):  # the test ids show it: no memory address
        return "SummaryEncoder()"


def knn():
    return KNNClassifier(k=3, device="cpu")


def resmem():
    # eval(): fit runs the base model in eval mode; a train-mode one would be switched (see the report)
    return ResMem(Summary().eval(), k=1, task="regression")


def rac():
    return RACClassifier(RAC_MEMORY, query_encoder=SummaryEncoder(), k=2, metric="l2", width=8, heads=1, epochs=1,
                         batch_size=64, device="cpu", progress=False)


HEADS = {"KNNClassifier": knn, "ResMem": resmem, "RACClassifier": rac}

_X_UNCHECKED = ("X goes to the torch base model (and the query encoder) as it is: ResMem/RAC do not run "
                "check_array, whose rules are for feature matrices, so the model, not the head, refuses it")
_NO_N_FEATURES = ("X is the base model's input (features, images, token ids), not a feature matrix: "
                  "the head sets no n_features_in_ and leaves X's width to the base model")
_PICKLE = ("a fitted head holds its memory, an open LanceDB/DuckDB handle, which does not pickle: "
           "the memory on disk is the saved state, refit from it")
_Y_UNCHECKED = ("RACClassifier takes any hashable labels and does not run check_classification_targets / "
                "column_or_1d on y: continuous, 2-d or missing y are not refused in scikit-learn's words")

EXPECTED_FAILURES = {
    "KNNClassifier": {
        "check_sample_weight_equivalence_on_dense_data":
            "sample_weight multiplies a row's vote, but a repeated row also takes one of the k neighbour "
            "places: weight 2 is not the row twice, nor weight 0 the row gone",
        "check_n_features_in_after_fitting":
            "queries of the wrong width raise memstore's DimensionMismatchError (a ValueError) 'queries have "
            "dimension 1, the memory holds 4-d vectors', not scikit-learn's 'X has 1 features, but ...'",
        "check_fit2d_predict1d":
            "one vector is one query (memstore.search.as_queries): predict(x) of a 1-d x is by design",
        "check_fit2d_1sample":
            "k=3 neighbours cannot be found among 1 row: fit refuses it as 'k = 3, n_samples_fit = 1' "
            "(memstore.search.check_k), not in the words the check looks for ('n_samples = 1', ...)",
    },
    "ResMem": {
        "check_estimators_overwrite_params":
            "the check compares joblib.hash of a deep copy of base_model with the model after fit, and a "
            "deep-copied torch tensor hashes differently: it fails with the weights untouched "
            "(test_fit_leaves_the_base_model_s_weights_alone checks them)",
        "check_n_features_in": _NO_N_FEATURES,
        "check_n_features_in_after_fitting": _NO_N_FEATURES,
        **dict.fromkeys(["check_complex_data", "check_dtype_object", "check_estimators_empty_data_messages",
                         "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_fit1d",
                         "check_fit2d_predict1d"], _X_UNCHECKED),
        "check_estimators_pickle": _PICKLE,
    },
    "RACClassifier": {
        "check_n_features_in": _NO_N_FEATURES,
        "check_n_features_in_after_fitting": _NO_N_FEATURES,
        **dict.fromkeys(["check_complex_data", "check_dtype_object", "check_estimators_empty_data_messages",
                         "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_fit2d_predict1d",
                         "check_classifier_data_not_an_array", "check_classifiers_train"], _X_UNCHECKED),
        "check_estimators_pickle": _PICKLE,
        **dict.fromkeys(["check_classifiers_classes", "check_decision_proba_consistency"],
                        "decision_function gives the fused logits, (n, classes), for two classes too (the "
                        "paper's form, as decision_parts); scikit-learn expects (n,) for a binary problem"),
        **dict.fromkeys(["check_classifiers_regression_target", "check_supervised_y_2d", "check_requires_y_none"],
                        _Y_UNCHECKED),
        "check_fit2d_1sample": "one training row is refused as 'fit needs at least two classes, got [1]', "
                               "not in the words the check looks for ('1 class', 'one sample', ...)",
    },
}


@pytest.fixture(scope="module", autouse=True)
def rac_memory(tmp_path_factory):
    """20 rows of 2-d vectors with three labels: what RACClassifier reads, shared by every check."""
    folder, back = tmp_path_factory.mktemp("contract"), os.getcwd()
    os.chdir(folder)
    try:
        mem = memstore.open(RAC_MEMORY)
        rng = np.random.default_rng(0)
        mem.add(rng.standard_normal((20, 2)).astype(np.float32), [f"row {i % 3}" for i in range(20)])
        yield folder / RAC_MEMORY
    finally:
        os.chdir(back)


@pytest.fixture(autouse=True)
def temporary_files_in_tmp_path(tmp_path, monkeypatch):
    """ResMem's default memories (tempfile.mkdtemp) land in pytest's tmp_path, cleaned up with it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


# -- scikit-learn's checks -------------------------------------------------------------------
@parametrize_with_checks([knn(), resmem(), rac()],
                         expected_failed_checks=lambda head: EXPECTED_FAILURES[type(head).__name__])
def test_scikit_learn_s_estimator_checks(estimator, check):
    check(estimator)


def test_the_docstring_lists_every_check_that_does_not_apply():
    for head, checks in EXPECTED_FAILURES.items():
        assert head in __doc__
        for name in checks:
            assert name in __doc__, name


# -- memstore's contract ----------------------------------------------------------------------
def data(name: str):
    """(X, y) a head of this name fits on: 30 rows, 3 features, 3 classes (ResMem: a regression target)."""
    X = np.random.default_rng(0).normal(size=(30, 3))
    return X, (X[:, 0] if name == "ResMem" else np.arange(30) % 3)


#: the methods that need a fitted head, and their arguments beyond X (y: the targets)
NEED_FIT = {
    "KNNClassifier": ["predict", "predict_proba", "kneighbors", "explain", "score"],
    "ResMem": ["predict", "decision_function", "explain", "score", "score_grid"],
    "RACClassifier": ["predict", "predict_proba", "decision_function", "decision_parts", "kneighbors", "explain",
                      "score", "use_memory"],
}
TAKES_Y = {"score", "score_grid"}


@pytest.mark.parametrize("name, method", [(n, m) for n, methods in NEED_FIT.items() for m in methods])
def test_a_head_used_before_fit_raises_not_fitted_error(name, method):
    X, y = data(name)
    call = getattr(HEADS[name](), method)
    args = (RAC_MEMORY,) if method == "use_memory" else (X, y) if method in TAKES_Y else (X,)
    with pytest.raises(NotFittedError, match=f"This {name} instance is not fitted yet"):
        call(*args)


def bad_values(constraints: list) -> list:
    """Values outside every constraint of a parameter: an object of no valid type, then one per constraint."""
    values = [type("BadType", (), {})()]
    for constraint in map(make_constraint, constraints):
        try:
            value = generate_invalid_param_val(constraint)
        except NotImplementedError:  # no value of this type is invalid (None, a plain type)
            continue
        if not any(make_constraint(c).is_satisfied_by(value) for c in constraints):
            values.append(value)
    return values


def _id(value) -> str:
    return value if isinstance(value, str) else repr(value) if isinstance(value, (int, float)) else type(value).__name__


def declared(head) -> list[tuple[str, object]]:
    return [(p, v) for p, cs in head._parameter_constraints.items() if cs != "no_validation" for v in bad_values(cs)]


def assert_refused(info, param: str, value) -> None:
    """The error names the parameter and the value, says what is allowed, and comes from sklearn's validator."""
    message = str(info.value)
    assert re.match(rf"{param} must be .+", message), message
    assert repr(value) in message, message
    assert isinstance(info.value.__cause__, InvalidParameterError)


@pytest.mark.parametrize("name", HEADS)
def test_every_parameter_has_a_declared_constraint(name):
    head = HEADS[name]()
    assert head._parameter_constraints.keys() == head.get_params(deep=False).keys()


@pytest.mark.parametrize("name, param, value",
                         [(n, p, v) for n, make in HEADS.items() for p, v in declared(make())],
                         ids=_id)
def test_each_declared_constraint_refuses_a_bad_value_at_fit(name, param, value):
    head = HEADS[name]().set_params(**{param: value})  # __init__ and set_params only store it
    with pytest.raises(InvalidInputError) as info:
        head.fit(*data(name))
    assert_refused(info, param, value)


def test_rules_between_parameters_are_checked_at_fit_too():
    with pytest.raises(InvalidInputError, match="width 30 must be a multiple of heads 4"):
        rac().set_params(width=30, heads=4).fit(*data("RACClassifier"))


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    """A bigram toy LM and its kNN-LM datastore (as in memstore.heads.knnlm's docstring)."""

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.out = torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5)

        def forward(self, ids):
            h = self.emb(ids)
            return self.out(h), h

    mem = memstore.open(tmp_path_factory.mktemp("knnlm") / "ds.mem")
    build_datastore(mem, Toy(), [[0, 1, 2, 3, 4, 0, 1]], progress=False)
    return Toy(), mem


@pytest.mark.parametrize("param, value", declared(KNNLM), ids=_id)
def test_each_rule_knnlm_declares_refuses_a_bad_value_at_construction(datastore, param, value):
    model, mem = datastore
    with pytest.raises(InvalidInputError) as info:
        KNNLM(model, mem, **{"k": 2, param: value})
    assert_refused(info, param, value)


def same(a, b) -> bool:
    """Equal values; for objects clone deep-copies (a torch module, an encoder): the same type and weights."""
    if isinstance(a, torch.nn.Module):
        return type(a) is type(b) and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                                             b.state_dict().values()))
    if a is None or isinstance(a, (str, int, float, bool)):
        return a == b
    return type(a) is type(b)


@pytest.mark.parametrize("name", HEADS)
def test_get_params_set_params_and_clone_round_trip(name):
    head = HEADS[name]()
    params = head.get_params(deep=False)
    twin = clone(head).set_params(**params)  # set_params takes what get_params gives
    assert twin.get_params(deep=False).keys() == params.keys()
    assert all(same(params[p], v) for p, v in twin.get_params(deep=False).items())
    assert clone(head).set_params(k=head.k + 1).k == head.k + 1  # a clone's parameters are its own
    X, y = data(name)
    fitted = head.fit(X, y)
    again = clone(fitted)  # a clone of a fitted head is a fresh, unfitted one
    with pytest.raises(NotFittedError):
        again.predict(X)
    np.testing.assert_array_equal(again.fit(X, y).predict(X), fitted.predict(X))


def test_fit_leaves_the_base_model_s_weights_alone():
    head = resmem()
    before = {k: v.clone() for k, v in head.base_model.state_dict().items()}
    head.fit(*data("ResMem"))
    assert all(torch.equal(before[k], v) for k, v in head.base_model.state_dict().items())

"""The estimator contract the heads share, as scikit-learn's own estimators keep it.

A head declares the rules of its parameters as data, a class attribute
``_parameter_constraints`` mapping each ``__init__`` parameter to a list of
scikit-learn constraints (the value must satisfy one of them)::

    _parameter_constraints = {"k": [Integers(1)], "sigma": [POSITIVE],
                              "metric": [StrOptions(set(METRICS))], "scale": [POSITIVE, None]}

``__init__`` only stores the parameters (so ``get_params``, ``set_params``
and ``clone`` work, and a bad value set later is caught too); ``fit`` calls
:meth:`MemoryHead._validate_params` first, which checks every declared rule,
then :meth:`MemoryHead._check_param_relations` for the rules one parameter's
constraint cannot say (``width`` a multiple of ``heads``). A bad value raises
memstore's :class:`~memstore.errors.InvalidInputError` (a ``ValueError``)
naming the parameter, the value and what is allowed; scikit-learn's
``InvalidParameterError`` is its ``__cause__``. A head used before ``fit``
raises scikit-learn's ``NotFittedError``.

The constraints are those of ``sklearn.utils._param_validation``, the module
scikit-learn's estimators validate with (it has no public equivalent in
scikit-learn 1.9).

Examples
--------
>>> from memstore.heads.base import MemoryHead, Integers, POSITIVE
>>> class Toy(MemoryHead):
...     _parameter_constraints = {"k": [Integers(1)], "sigma": [POSITIVE, None]}
...     _fitted_attributes = ("k_",)
...     def __init__(self, k=1, sigma=None):
...         self.k, self.sigma = k, sigma
...     def fit(self, X=None, y=None):
...         self._validate_params()
...         self.k_ = self.k
...         return self
>>> Toy(k=3).fit().k_
3
>>> Toy(k=0).fit()
Traceback (most recent call last):
...
memstore.errors.InvalidInputError: k must be a positive integer (an int in the range [1, inf)), got 0
>>> Toy(sigma=-1.0).fit()
Traceback (most recent call last):
...
memstore.errors.InvalidInputError: sigma must be positive (a float in the range (0.0, inf)) or None, got -1.0
>>> Toy()._check_fitted()
Traceback (most recent call last):
...
sklearn.exceptions.NotFittedError: This Toy instance is not fitted yet: call fit(X, y) first.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    make_constraint,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted

from ..errors import InvalidInputError


class Integers(Interval):
    """Integers in ``[left, right]`` (``right=None``: no upper bound), bools refused.

    ``True`` is an ``Integral`` to Python, but ``epochs=True`` is a mistake,
    not one epoch.

    >>> Integers(1).is_satisfied_by(3), Integers(1).is_satisfied_by(True), Integers(1).is_satisfied_by(0)
    (True, False, False)
    """

    def __init__(self, left: int, right: int | None = None, *, closed: str | None = None):
        super().__init__(Integral, left, right, closed=closed or ("left" if right is None else "both"))

    def is_satisfied_by(self, val) -> bool:
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


#: a real number > 0 (σ, temperatures, learning rates)
POSITIVE = Interval(Real, 0, None, closed="neither")
#: a real number >= 0 (penalties, weight decay)
NON_NEGATIVE = Interval(Real, 0, None, closed="left")
#: what ``Memory.searcher`` takes as ``index``
INDEXES = ("auto", "exact", "ann", "ivf")


def _interval_rule(c: Interval) -> str:
    """A short phrase for an interval, the way memstore's messages always said it."""
    integer = c.type is Integral
    closed_left, closed_right = c.closed in ("left", "both"), c.closed in ("right", "both")
    if c.right is None and c.left is not None:
        if integer and (c.left, closed_left) in ((1, True), (0, False)):
            return "a positive integer"
        if not integer and c.left == 0 and not closed_left:
            return "positive"
        rule = f"{'>=' if closed_left else '>'} {c.left}"
    elif c.left is None and c.right is not None:
        rule = f"{'<=' if closed_right else '<'} {c.right}"
    else:
        rule = f"in {'[' if closed_left else '('}{c.left}, {c.right}{']' if closed_right else ')'}"
    return f"an integer {rule}" if integer else rule


def _rule(constraint) -> str:
    """How a message says one constraint: short, then in scikit-learn's words for a range."""
    c = make_constraint(constraint)
    if isinstance(c, Interval):
        return f"{_interval_rule(c)} ({c})"
    if isinstance(c, Options):
        return "one of " + _choices([repr(o) for o in sorted(c.options, key=str)])
    return str(c)


def _choices(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def parameter_error(name: str, value, constraints: list) -> InvalidInputError:
    """The error for ``name=value`` outside ``constraints``: the parameter, the value, what is allowed.

    >>> parameter_error("voting", "majority", [StrOptions({"rank", "plurality"})])
    InvalidInputError("voting must be one of 'plurality' or 'rank': 'majority' is not one of them")
    """
    shown = [c for c in constraints if not getattr(make_constraint(c), "hidden", False)]
    rule = _choices([_rule(c) for c in shown])
    if all(isinstance(make_constraint(c), Options) or c is None for c in shown):
        return InvalidInputError(f"{name} must be {rule}: {value!r} is not one of them")
    return InvalidInputError(f"{name} must be {rule}, got {value!r}")


def validate_params(constraints: dict, params: dict, caller: str) -> None:
    """Check ``params`` against declared ``constraints`` (scikit-learn's format), raising memstore's error.

    Each parameter goes through scikit-learn's own validator alone, so the
    error knows which parameter failed without reading sklearn's message.
    Parameters without constraints (or ``"no_validation"``) pass.

    >>> validate_params({"lmbda": [Interval(Real, 0, 1, closed="both")]}, {"lmbda": 1.5}, "KNNLM")
    Traceback (most recent call last):
    ...
    memstore.errors.InvalidInputError: lmbda must be in [0, 1] (a float in the range [0.0, 1.0]), got 1.5
    """
    for name, value in params.items():
        if name not in constraints or constraints[name] == "no_validation":
            continue
        try:
            validate_parameter_constraints({name: constraints[name]}, {name: value}, caller_name=caller)
        except InvalidParameterError as exc:
            raise parameter_error(name, value, constraints[name]) from exc


class MemoryHead(BaseEstimator):
    """Base of the heads: declared parameter rules checked at ``fit``, ``NotFittedError`` before it.

    Subclasses set ``_parameter_constraints`` (module docstring),
    ``_fitted_attributes`` (what ``fit`` sets last: present means fitted) and
    ``_fit_hint`` (the call the not-fitted message suggests), call
    ``self._validate_params()`` at the top of ``fit`` and
    ``self._check_fitted()`` before using what fit learned.
    """

    _parameter_constraints: dict = {}
    _fitted_attributes: tuple[str, ...] = ()
    _fit_hint = "fit(X, y)"

    def _validate_params(self) -> None:
        """Every declared constraint, then the rules between parameters; scikit-learn's hook name."""
        validate_params(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)
        self._check_param_relations()

    def _check_param_relations(self) -> None:
        """Rules a single parameter's constraint cannot say (none by default); raise InvalidInputError."""

    def _check_fitted(self) -> None:
        # %(name)s: check_is_fitted fills in the class name
        check_is_fitted(self, list(self._fitted_attributes),
                        msg=f"This %(name)s instance is not fitted yet: call {self._fit_hint} first.")


__all__ = ["INDEXES", "NON_NEGATIVE", "POSITIVE", "HasMethods", "Integers", "Interval", "MemoryHead", "StrOptions",
           "parameter_error", "validate_params"]

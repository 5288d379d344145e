"""Validation as data: each option's constraints declared once, checked by one function.

As scikit-learn's ``_parameter_constraints``: a component lists, per option, what it accepts
(``Interval(Integral, 1, None)``, ``Options("fp32", "bf16")``, ``str``, ``None``), and
:func:`check` raises one :class:`~llmos_lab.errors.ConfigError` naming the option, the value and
every accepted form. ``help()`` tables print the same declaration, so the documented range and
the enforced one cannot drift. One rule for numbers everywhere: ``bool`` is never a number;
numpy scalars are numbers; integers must be integral types (``2.0`` is not an int); reals must
be finite. :func:`check` returns the value as a plain Python ``int`` / ``float`` so configs
stay JSON-clean.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

Integral, Real = numbers.Integral, numbers.Real


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (Integral or Real) between ``low`` and ``high`` (None: unbounded);
    ``closed`` says which ends belong: "both", "left", "right" or "neither"."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if not is_number(value, self.kind):
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        return ((self.low is None or value > self.low or (left and value == self.low)) and
                (self.high is None or value < self.high or (right and value == self.high)))

    def __str__(self) -> str:
        noun = "an integer" if self.kind is Integral else "a number"
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return (f"{noun} in {'[' if left else '('}{self.low:g}, {self.high:g}"
                    f"{']' if right else ')'}")
        if self.low is not None:
            return f"{noun} {'>=' if left else '>'} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<=' if right else '<'} {self.high:g}"
        return noun


class Options:
    """One of a fixed set of values (compared with ``==``; ``str`` enums compare as text)."""

    def __init__(self, *values: Any):
        self.values = tuple(values)

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:  # an unhashable value compared with an enum
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(str(v)) if isinstance(v, str) else repr(v)
                                     for v in self.values)


@dataclass(frozen=True)
class Satisfies:
    """A predicate with its description, for what neither an interval nor options say."""

    test: Any
    description: str

    def accepts(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def __str__(self) -> str:
        return self.description


_TYPE_NAMES = {str: "a string", bool: "True or False", dict: "a dict", list: "a list",
               os.PathLike: "a path"}


def is_number(value: Any, kind: type = Real) -> bool:
    """The one rule: no bools; numpy scalars count; reals are finite."""
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    return kind is Integral or math.isfinite(value)


def describe(constraints: Iterable[Any]) -> str:
    """'an integer >= 1 or None': what the option accepts, in words."""
    words = []
    for c in constraints:
        if c is None:
            words.append("None")
        elif isinstance(c, type):
            words.append(_TYPE_NAMES.get(c, f"a {c.__name__}"))
        else:
            words.append(str(c))
    return " or ".join(words)


def _accepts(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint) and (constraint is bool or
                                                  not isinstance(value, bool))
    return constraint.accepts(value)


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return value
    return int(value) if isinstance(value, Integral) else float(value)


def check(name: str, value: Any, constraints: Iterable[Any]) -> Any:
    """``value`` if any constraint accepts it (numbers as plain int/float), else a
    ConfigError naming ``name`` and every accepted form."""
    constraints = list(constraints)
    if any(_accepts(c, value) for c in constraints):
        return _plain(value)
    raise ConfigError(name, value, describe(constraints))


def table(constraints: Mapping[str, Iterable[Any]]) -> Any:
    """A DataFrame of each option and what it accepts: what a component's ``help()`` shows."""
    import pandas as pd

    return pd.DataFrame({"valid": {name: describe(c) for name, c in constraints.items()}}
                        ).rename_axis("parameter")


def check_all(owner: Any, constraints: Mapping[str, Iterable[Any]]) -> None:
    """Check (and normalise in place) every declared attribute of ``owner``."""
    for name, allowed in constraints.items():
        setattr(owner, name, check(name, getattr(owner, name), allowed))


# the shapes most options take, named once
COUNT = Interval(Integral, 1, None)  # an integer >= 1
NATURAL = Interval(Integral, 0, None)  # an integer >= 0
POSITIVE = Interval(Real, 0, None, closed="neither")  # a number > 0
FRACTION = Interval(Real, 0, 1, closed="left")  # a fraction in [0, 1)
PRIORITY = Interval(Integral)  # any integer; larger runs (or is granted) first

"""llmos_lab.constraints: one declaration per option, one check, one rule for numbers."""

from __future__ import annotations

import numpy as np
import pytest

import llmos_lab as lab
from llmos_lab.constraints import (
    COUNT,
    FRACTION,
    POSITIVE,
    Integral,
    Interval,
    Options,
    Real,
    Satisfies,
    check,
    describe,
)
from llmos_lab.errors import ConfigError


@pytest.mark.parametrize("value, ok", [
    (1, True), (np.int64(3), True), (0, False), (True, False), (2.0, False), ("2", False),
    (None, False)])
def test_count(value, ok):
    assert COUNT.accepts(value) is ok


@pytest.mark.parametrize("value, ok", [
    (0.5, True), (np.float32(2), True), (3, True), (0, False), (-1.0, False),
    (float("inf"), False), (float("nan"), False), (False, False)])
def test_positive(value, ok):
    assert POSITIVE.accepts(value) is ok


def test_interval_ends_and_words():
    assert FRACTION.accepts(0.0) and not FRACTION.accepts(1.0)
    assert str(FRACTION) == "a number in [0, 1)"
    assert str(Interval(Integral, None, 10, closed="neither")) == "an integer < 10"
    assert str(Interval(Real, 0, None)) == "a number >= 0"
    assert str(Interval(Integral)) == "an integer"


def test_check_returns_plain_python_numbers():
    value = check("lr", np.float32(0.5), (POSITIVE,))
    assert value == 0.5 and type(value) is float
    count = check("n", np.int64(4), (COUNT,))
    assert count == 4 and type(count) is int


def test_check_names_the_option_and_every_accepted_form():
    with pytest.raises(ConfigError, match=r"invalid quantum=0: expected None or an integer >= 1"):
        check("quantum", 0, (None, COUNT))
    with pytest.raises(ConfigError, match=r"one of 'a', 'b'"):
        check("mode", "c", (Options("a", "b"),))
    with pytest.raises(ConfigError, match="a list of names"):
        check("targets", [], (Satisfies(lambda v: bool(v), "a list of names"),))


def test_types_refuse_bool_unless_bool_is_declared():
    assert describe([str, bool, None]) == "a string or True or False or None"
    with pytest.raises(ConfigError):
        check("x", True, (int,))
    assert check("flag", False, (bool,)) is False


def test_one_rule_for_numbers_across_components():
    """numpy scalars are numbers, bools are not: the same in a Demand, a Task, the
    scheduler's set_weight and set_priority, and TrainConfig."""
    demand = lab.Demand("a", weight=np.float32(2), priority=np.int64(3))
    assert (demand.weight, demand.priority) == (2.0, 3)
    sched = lab.Scheduler("stride")
    sched.submit(lab.Task("t", iter([1, 2])))
    sched.set_weight("t", np.float32(2))
    sched.set_priority("t", np.int64(2))
    assert lab.TrainConfig(lr=np.float32(0.5)).lr == 0.5
    for bad in (lambda: lab.Demand("b", weight=True), lambda: sched.set_weight("t", True),
                lambda: sched.set_priority("t", True), lambda: lab.TrainConfig(lr=True),
                lambda: lab.Demand("c", priority=1.5), lambda: sched.set_priority("t", 1.5)):
        with pytest.raises(ConfigError):
            bad()


def test_help_shows_the_declarations_the_checks_use():
    help_ = lab.TrainConfig.help()
    assert help_.loc["warmup", "valid"] == "a number in [0, 1)"
    assert help_.loc["max_steps", "valid"] == "None or an integer >= 1"
    with pytest.raises(ConfigError, match=r"expected a number in \[0, 1\)"):
        lab.TrainConfig(warmup=1.0)
    assert lab.Scheduler.help().loc["quantum", "valid"] == "None or an integer >= 1"
    assert "'disk'" in lab.ModelKernel.help().loc["to", "valid"]


def test_every_train_config_field_declares_what_it_accepts():
    import dataclasses

    for f in dataclasses.fields(lab.TrainConfig):
        assert f.metadata.get("valid"), f.name
        assert f.metadata.get("help"), f.name

"""llmos_lab.registry: one shape for policies, data sets, assets and benchmarks."""

from __future__ import annotations

import pytest

import llmos_lab as lab
from llmos_lab.errors import ConfigError, UnknownNameError
from llmos_lab.registry import Registry


def test_register_get_names_and_decorator():
    reg = Registry("widget")
    reg.register("b", 2)

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg.get("b") == 2
    assert reg.names() == ["a", "b"] == list(reg)
    assert "a" in reg and "z" not in reg and 3 not in reg and len(reg) == 2


def test_unknown_name_lists_the_known_ones_and_suggests():
    reg = Registry("scheduling policy")
    reg.register("stride", object())
    with pytest.raises(UnknownNameError, match=r"unknown scheduling policy 'strid'; known "
                       r"scheduling policies: stride; did you mean 'stride'"):
        reg.get("strid")
    with pytest.raises(UnknownNameError):
        reg.get(["unhashable"])


def test_bad_names_are_refused():
    with pytest.raises(ConfigError):
        Registry("x").register("", 1)


def test_copy_is_independent():
    reg = Registry("x")
    reg.register("a", 1)
    other = reg.copy()
    other.register("b", 2)
    assert reg.names() == ["a"] and other.names() == ["a", "b"]


def test_each_subsystem_owns_one_registry():
    from llmos_lab import alloc_policies, cli, sched_policies

    registries = [alloc_policies.POLICIES, sched_policies.POLICIES, lab.datasets.DATASETS,
                  lab.assets.ASSETS, cli.BENCHMARKS]
    assert all(isinstance(r, Registry) for r in registries)
    assert len({r.kind for r in registries}) == 5
    # "priority" names a policy in both, and they are different things
    assert "priority" in alloc_policies.POLICIES and "priority" in sched_policies.POLICIES
    assert alloc_policies.POLICIES.get("priority") is not sched_policies.POLICIES.get("priority")

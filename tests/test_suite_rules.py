"""Rules the test suite keeps, so that it cannot pass on a fast machine and fail on a slow one.

- No test sleeps to let something happen: it waits on the condition (``wait_until``, an
  Event, a join) and a time bound there only guards against a hang, so it is generous
  (at least ``HANG_GUARD`` seconds). Sleeping inside a helper that *simulates work* (a task
  whose steps take time) is fine, and so is a sleep that paces the test's own input (a burst
  of calls spread over time, marked ``# pace``); sleeping to wait for an outcome is not.
- Speed targets live in benchmarks/, never in tests (checked by review, not here).
"""

from __future__ import annotations

import ast
from pathlib import Path

HANG_GUARD = 30.0
TESTS = Path(__file__).resolve().parent
WAITS = {"wait_until", "wait", "join", "wait_for"}


def _literal_seconds(call: ast.Call, name: str) -> float | None:
    """The literal time bound passed to a wait, if any (positional or timeout=)."""
    args = [kw.value for kw in call.keywords if kw.arg == "timeout"]
    if not args:
        position = 1 if name in ("wait_until", "wait_for") else 0
        if len(call.args) > position:
            args = [call.args[position]]
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, (int, float)):
        return float(args[0].value)
    return None


def _violations(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef) or not func.name.startswith("test_"):
            continue
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id",
                                                                                 "")
            where = f"{path.name}:{node.lineno} in {func.name}"
            if name == "sleep" and isinstance(target, ast.Attribute) and \
                    getattr(target.value, "id", "") == "time" and \
                    "# pace" not in lines[node.lineno - 1]:
                found.append(f"{where}: time.sleep in a test body (wait on the condition)")
            elif name in WAITS:
                seconds = _literal_seconds(node, name)
                if seconds is not None and seconds < HANG_GUARD:
                    found.append(f"{where}: {name}(..., {seconds:g}) is a time bound under "
                                 f"{HANG_GUARD:g} s (a bound only guards against a hang)")
    return found


def test_no_test_waits_a_fixed_time_or_bounds_a_wait_tightly():
    problems = [v for path in sorted(TESTS.rglob("test_*.py")) for v in _violations(path)]
    assert not problems, "\n".join(problems)


def test_the_rule_catches_both_patterns(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("import time\n"
                   "def test_x(view):\n"
                   "    time.sleep(0.3)\n"
                   "    assert wait_until(lambda: view.done, 2)\n"
                   "    t.join(timeout=5)\n"
                   "    time.sleep(0.002)  # pace: spread the calls\n"
                   "def helper():\n"
                   "    time.sleep(0.01)  # simulated work: allowed\n")
    problems = _violations(bad)
    assert len(problems) == 3, problems

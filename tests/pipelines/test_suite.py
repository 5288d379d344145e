"""Suite files: checked before anything runs; errors name the file, line, run and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_lab.errors import SuiteError
from llmos_lab.pipelines import load_suite, write_notebook

SUITE = """\
suite: tiny
defaults: {timeout: 60, retries: 1, memory: 100MiB}
runs:
  - notebook: score.ipynb
    grid: {x: [1, 2]}
    seeds: [0, 1, 2]
    gate:
      score: {higher_is_better: true, atol: 0.5}
  - notebook: score.ipynb
    name: fixed
    params: {x: 5}
"""


def score_notebook(folder: Path, body: str = "lab.record('score', x + seed / 10)") -> Path:
    return write_notebook(folder / "score.ipynb", "x = 1\nseed = 0\nlabel = 'a'",
                          "import llmos_lab as lab\n" + body)


@pytest.fixture
def folder(tmp_path):
    score_notebook(tmp_path)
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "suite.yaml"
    path.write_text(text)
    return path


def test_grid_and_seeds_expand_to_every_combination(folder):
    suite = load_suite(write(folder, SUITE))
    assert suite.name == "tiny" and len(suite.runs) == 2 * 3 + 1
    first = suite.runs[0]
    assert first.params == {"x": 1, "seed": 0} and first.seed == 0
    assert first.run_id == "score x=1 seed=0" and first.key == "score x=1"
    assert first.memory == 100 * 2**20 and first.retries == 1 and first.timeout == 60.0
    assert [g.metric for g in first.gates] == ["score"]
    assert suite.runs[-1].run_id == "fixed x=5" and suite.runs[-1].seed is None
    assert len({r.output_name for r in suite.runs}) == len(suite.runs)
    assert list(suite.table()["run_id"])[:2] == ["score x=1 seed=0", "score x=1 seed=1"]


@pytest.mark.parametrize("change, line, key, words", [
    (("grid: {x: [1, 2]}", "grid: {xx: [1, 2]}"), 5, "grid.xx", "did you mean 'x'"),
    (("seeds: [0, 1, 2]", "seeds: [0, 1, 2]\n    colour: red"), 7, "colour", "unknown key"),
    (("score: {higher", "accuracy: {higher"), 8, "gate.accuracy", "never records"),
    (("params: {x: 5}", "params: {x: 'five'}"), 11, "x", "declared int"),
    (("params: {x: 5}", "params: {x: 2.5}"), 11, "x", "is a float"),
    (("notebook: score.ipynb\n    name", "notebook: missing.ipynb\n    name"), 9, "notebook",
     "does not exist"),
    (("defaults: {timeout: 60", "defaults: {timeout: -1"), None, "timeout", "a number > 0"),
    (("seeds: [0, 1, 2]", "seeds: [0, 0]"), 6, "seeds", "distinct integers"),
    (("atol: 0.5}", "atol: -1}"), 8, "gate.score", "numbers >= 0"),
    (("suite: tiny", "suite: [tiny]"), 1, "suite", "must be a name"),
    (("runs:", "runz:"), 3, "runz", "unknown key"),
])
def test_each_error_names_file_line_run_and_key(folder, change, line, key, words):
    path = write(folder, SUITE.replace(*change))
    with pytest.raises(SuiteError, match=words) as err:
        load_suite(path)
    assert err.value.file == str(path) and err.value.key == key
    if line is not None:
        assert err.value.line == line
    assert str(path) in str(err.value)


def test_not_yaml_and_not_a_file(folder):
    with pytest.raises(SuiteError, match=r"line 2.*not valid YAML"):
        load_suite(write(folder, "suite: x\nruns: [a, : b\n"))
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(folder / "nope.yaml")


def test_seeds_need_a_seed_parameter(tmp_path):
    write_notebook(tmp_path / "score.ipynb", "x = 1", "import llmos_lab as lab\n"
                   "lab.record('score', x)")
    with pytest.raises(SuiteError, match="declares no 'seed' parameter"):
        load_suite(write(tmp_path, SUITE))


def test_a_gate_on_a_computed_record_name_is_accepted(tmp_path):
    score_notebook(tmp_path, "name = 'score'\nlab.record(f'{name}', x)")
    assert load_suite(write(tmp_path, SUITE)).runs[0].gates[0].metric == "score"


def test_the_shipped_nightly_suite_is_valid():
    root = Path(__file__).resolve().parents[2]
    suite = load_suite(root / "notebooks" / "nightly.yaml")
    assert suite.name == "nightly" and len(suite.runs) >= 3
    assert any(r.gates for r in suite.runs)

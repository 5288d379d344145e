"""Pipelines: papermill runs with parameters, records read back, failures kept, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import llmos_lab as lab
from llmos_lab import pipelines
from llmos_lab.errors import NotebookExecutionError, ParameterError
from llmos_lab.pipelines import write_notebook


@pytest.fixture
def notebook(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    return write_notebook(
        folder / "square.ipynb",
        "x = 2\nscale = 1.5\nlabel = 'a'\nflag = False",
        "import os\nimport llmos_lab as lab\n"
        "lab.record('square', x * x * scale)\nlab.record('label', label)\n"
        "lab.record('flag', flag)\nlab.record('cwd', os.getcwd())\n"
        "lab.record('square', x * x * scale)",
    )


def test_run_passes_parameters_and_collects_records(notebook, tmp_path):
    out = tmp_path / "deep" / "runs"  # papermill would not create this; run() does
    result = pipelines.run(notebook, {"x": 3, "label": "b"}, out)
    assert result.records["square"] == 3 * 3 * 1.5
    assert result.records["label"] == "b"
    assert result.records["flag"] is False
    assert result.records["cwd"] == str(notebook.parent)  # runs in the notebook's folder
    assert result.output == out / "square.ipynb"
    assert result.output.exists()
    assert [p.name for p in out.iterdir()] == ["square.ipynb"]  # no partial file left
    assert result.parameters == {"x": 3, "label": "b"}


def test_a_killed_run_leaves_nothing_the_next_run_keeps(notebook, tmp_path):
    """The partial notebook of a run whose process died is removed by the next run there."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path / "runs"
    out.mkdir()
    stale = out / f".square.ipynb.tmp-{dead}-0000.ipynb"
    stale.write_text("{half a notebook")
    pipelines.run(notebook, {"x": 2}, out)
    assert [p.name for p in out.iterdir()] == ["square.ipynb"]


def test_string_values_are_converted_to_the_declared_type(notebook, tmp_path):
    result = pipelines.run(notebook, {"x": "4", "scale": "0.5", "flag": "true"}, tmp_path)
    assert result.records["square"] == 8.0
    assert result.records["flag"] is True


def test_undeclared_parameter_is_named_with_the_declared_ones(notebook, tmp_path):
    with pytest.raises(ParameterError, match="'y'") as err:
        pipelines.run(notebook, {"y": 1}, tmp_path / "out")
    assert "x, scale, label, flag" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_value_of_the_wrong_type_is_rejected(notebook, tmp_path):
    with pytest.raises(ParameterError, match="'x' is declared int"):
        pipelines.run(notebook, {"x": "three"}, tmp_path)


def test_missing_notebook(tmp_path):
    with pytest.raises(ParameterError, match=r"nope\.ipynb"):
        pipelines.run(tmp_path / "nope.ipynb", {}, tmp_path)


def test_failed_run_keeps_the_executed_notebook(tmp_path):
    nb = write_notebook(tmp_path / "boom.ipynb", "n = 1", "raise ValueError(f'bad n={n}')")
    out = tmp_path / "runs"
    with pytest.raises(NotebookExecutionError, match="ValueError: bad n=1") as err:
        pipelines.run(nb, {}, out)
    assert [p.name for p in out.iterdir()] == ["boom.failed.ipynb"]
    assert err.value.output == str(out / "boom.failed.ipynb")


def test_record_outside_a_kernel_is_kept_in_process():
    assert lab.record("f1", np.float32(0.25)) == 0.25
    assert pipelines.records()["f1"] == 0.25
    with pytest.raises(ParameterError, match="finite"):
        lab.record("loss", float("nan"))
    with pytest.raises(ParameterError, match="list"):
        lab.record("values", [1, 2])
    with pytest.raises(ParameterError):
        lab.record("", 1)


def test_read_records_last_value_wins(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", {pipelines.RECORD_MIME: {
        "name": "acc", "value": v}}) for v in (0.1, 0.2)]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert pipelines.read_records(tmp_path / "x.ipynb") == {"acc": 0.2}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmos_lab", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_run_prints_records_and_the_output_path(notebook, tmp_path):
    proc = cli("run", str(notebook), "-p", "x", "5", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "square" in proc.stdout and "37.5" in proc.stdout
    assert str(tmp_path / "out" / "square.ipynb") in proc.stdout
    executed = json.loads((tmp_path / "out" / "square.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"x": 5}


def test_cli_reports_bad_parameters_with_exit_code_2(notebook, tmp_path):
    proc = cli("run", str(notebook), "-p", "epochs", "3", cwd=tmp_path)
    assert proc.returncode == 2
    assert "declares no parameter 'epochs'" in proc.stderr


def test_cli_assets_check_lists_every_asset(tmp_path):
    proc = cli("assets", "check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in lab.assets.ASSETS:
        assert name in proc.stdout
    proc = cli("assets", "check", "no-such-asset", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown asset 'no-such-asset'" in proc.stderr


# ---------------------------------------------------------------- failures, named and kept

def test_a_dead_kernel_names_the_signal_and_the_cell_and_keeps_the_notebook(tmp_path):
    nb = write_notebook(tmp_path / "die.ipynb", "n = 1",
                        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    out = tmp_path / "runs"
    with pytest.raises(NotebookExecutionError, match=r"kernel died during cell 1.*SIGKILL"):
        pipelines.run(nb, {}, out)
    assert [p.name for p in out.iterdir()] == ["die.failed.ipynb"]


def test_a_cell_timeout_is_named_with_the_limit(tmp_path):
    nb = write_notebook(tmp_path / "slow.ipynb", "n = 1", "import time\ntime.sleep(600)")
    out = tmp_path / "runs"
    with pytest.raises(NotebookExecutionError, match=r"cell 1 .*timed out after 2 s"):
        pipelines.run(nb, {}, out, timeout=2)
    assert [p.name for p in out.iterdir()] == ["slow.failed.ipynb"]


def test_a_later_success_removes_the_stale_failed_copy(tmp_path):
    nb = write_notebook(tmp_path / "flaky.ipynb", "fail = True",
                        "assert not fail, 'asked to fail'")
    out = tmp_path / "runs"
    with pytest.raises(NotebookExecutionError, match="asked to fail"):
        pipelines.run(nb, {}, out)
    pipelines.run(nb, {"fail": False}, out)
    assert [p.name for p in out.iterdir()] == ["flaky.ipynb"]


def test_cli_dead_kernel_is_one_message_and_exit_2(tmp_path):
    nb = write_notebook(tmp_path / "die.ipynb", "n = 1",
                        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    proc = cli("run", str(nb), "-o", "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "SIGKILL" in proc.stderr
    assert (tmp_path / "out" / "die.failed.ipynb").exists()


def test_cli_timeout_option(tmp_path):
    nb = write_notebook(tmp_path / "slow.ipynb", "n = 1", "import time\ntime.sleep(600)")
    proc = cli("run", str(nb), "-o", "out", "--timeout", "2", cwd=tmp_path)
    assert proc.returncode == 2 and "timed out after 2 s" in proc.stderr


def test_the_source_notebook_is_never_overwritten(notebook, tmp_path):
    before = notebook.read_bytes()
    with pytest.raises(lab.errors.OutputError, match="replace its source"):
        pipelines.run(notebook, {}, notebook.parent)
    proc = cli("run", str(notebook), "-o", str(notebook.parent), cwd=tmp_path)
    assert proc.returncode == 2 and "replace its source" in proc.stderr
    assert notebook.read_bytes() == before


@pytest.mark.parametrize("name", ["../x.ipynb", "/tmp/x.ipynb", "sub/x.ipynb", "x.txt", ".."])
def test_output_name_must_stay_inside_the_output_folder(notebook, tmp_path, name):
    with pytest.raises(ParameterError, match="output_name"):
        pipelines.run(notebook, {}, tmp_path / "out", output_name=name)
    assert not (tmp_path / "x.ipynb").exists()

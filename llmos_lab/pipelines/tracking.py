"""The same runs in MLflow, for people who already read results in its UI (optional extra).

After a night, each run becomes an MLflow run in the experiment named after the suite: its
parameters, every numeric ``lab.record``-ed value plus ``seconds`` and ``peak_memory`` as
metrics, and status, reason, night, key, notebook and git commit as tags. The SQLite database
stays the source of truth; MLflow is a view onto it. A ``file:`` URI uses MLflow's file store,
which MLflow keeps only in maintenance mode: we opt in for that URI alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from ..errors import ConfigError
from .database import ResultsDB


def log_night(uri: str, store: ResultsDB, night: int) -> int:
    """Log every run of ``night`` to the MLflow tracking server or store at ``uri``; returns
    how many runs were logged."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError("mlflow", uri, "an installed MLflow: pip install "
                          "'llmos-lab[mlflow]' (mlflow-skinny)") from None
    info = store.nights().set_index("night").loc[night]
    runs, metrics = store.runs(night), store.metrics(night)
    with _file_store_allowed(uri):
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(info["suite"])
        experiment_id = experiment.experiment_id if experiment else \
            client.create_experiment(info["suite"])
        for row in runs.itertuples():
            values = metrics[metrics["run_id"] == row.run_id]
            run = client.create_run(experiment_id, run_name=row.run_id, tags=_tags(row, info))
            for key, value in json.loads(row.params or "{}").items():
                client.log_param(run.info.run_id, key, value)
            for name, value in [*zip(values["metric"], values["value"], strict=True),
                                ("seconds", row.seconds), ("peak_memory", row.peak_memory)]:
                if value is not None and value == value:  # not NaN
                    client.log_metric(run.info.run_id, name, float(value))
            client.set_terminated(run.info.run_id,
                                  "FINISHED" if row.status == "ok" else "FAILED")
    return len(runs)


def _tags(row: Any, info: Any) -> dict[str, str]:
    tags = {"llmos.night": str(row.night), "llmos.key": str(row.key),
            "llmos.status": str(row.status), "llmos.notebook": str(row.notebook),
            "mlflow.source.git.commit": str(info["git_commit"] or "")}
    if row.reason:
        tags["llmos.reason"] = str(row.reason)[:5000]
    return tags


@contextlib.contextmanager
def _file_store_allowed(uri: str):
    key = "MLFLOW_ALLOW_FILE_STORE"
    if not uri.startswith("file:") or key in os.environ:
        yield
        return
    os.environ[key] = "true"
    try:
        yield
    finally:
        os.environ.pop(key, None)

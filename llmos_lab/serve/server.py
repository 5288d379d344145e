"""Run the app: uvicorn on a background thread (notebooks, papermill) or in the foreground
(``llmos-lab serve``, which stops cleanly on SIGINT/SIGTERM after in-flight requests finish).

``uvicorn.run`` fails inside Jupyter's running event loop; ``uvicorn.Server.run`` on a thread
of its own starts a fresh loop there and leaves the notebook's alone. The socket is bound
here, before the thread starts, so a port in use is an immediate, clear error and ``port=0``
gives its real port at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from ..errors import ConfigError
from ..scheduler import Scheduler
from .app import create_app
from .auth import Access, check_host
from .engine import ServingEngine
from .metrics import ServeMetrics
from .protocol import MAX_BODY_BYTES

START_TIMEOUT_SECONDS = 60.0  # a hang guard, not a speed expectation


class _Uvicorn(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM/SIGINT once its graceful shutdown is over, so the
    process dies of the signal; ``llmos-lab serve`` has stopped cleanly by then and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            self._captured_signals.clear()


class Server:
    """A handle on a running server: ``url``, ``stop()``, ``metrics()``."""

    def __init__(self, kernel, *, host: str = "127.0.0.1", port: int = 0,
                 api_keys: dict | None = None, scheduler: Scheduler | None = None,
                 max_batch: int = 16, batch_window: float = 0.005,
                 max_body: int = MAX_BODY_BYTES, log_level: str = "warning"):
        self.access = Access(api_keys)
        self.host = check_host(host, self.access.keys)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ConfigError("port", port, "an integer from 0 (any free port) to 65535")
        if not isinstance(batch_window, (int, float)) or not 0 <= batch_window <= 1:
            raise ConfigError("batch_window", batch_window, "seconds from 0 to 1")
        self._socket = _bind(self.host, port)  # first: a port in use leaves nothing running
        self.port = self._socket.getsockname()[1]
        self.kernel = kernel
        self.engine = ServingEngine(kernel, scheduler, max_batch=max_batch,
                                    batch_window=float(batch_window))
        self.metrics_ = ServeMetrics(kernel, self.engine.state)
        self.engine.metrics = self.metrics_
        self.app = create_app(kernel, self.engine, self.access, self.metrics_, max_body)
        config = uvicorn.Config(self.app, log_level=log_level, lifespan="off",
                                timeout_graceful_shutdown=30, access_log=False)
        self._uvicorn = _Uvicorn(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def scheduler(self) -> Scheduler:
        return self.engine.scheduler

    def start(self) -> Server:
        """Serve on a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._uvicorn.run,
                                        kwargs={"sockets": [self._socket]},
                                        name=f"llmos-lab-serve-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._close()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn's handlers), then clean up."""
        try:
            self._uvicorn.run(sockets=[self._socket])
        finally:
            self._close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting requests, let the ones in flight finish, then stop the engine."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def metrics(self) -> dict[str, float]:
        return self.metrics_.values()

    def _close(self) -> None:
        self.engine.close()
        self.metrics_.close()
        self._socket.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = self._thread is not None and self._thread.is_alive()
        return f"<llmos-lab server {self.url} {'running' if running else 'stopped'}>"

    def _repr_html_(self) -> str:
        return f"<b>llmos-lab server</b> at <a href='{self.url}/v1/models'>{self.url}</a>"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("port", port, f"a free port on {host} ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def serve(kernel, port: int = 0, api_keys: dict | None = None, *, host: str = "127.0.0.1",
          scheduler: Scheduler | None = None, max_batch: int = 16, batch_window: float = 0.005,
          max_body: int = MAX_BODY_BYTES, log_level: str = "warning") -> Server:
    """Serve ``kernel`` over OpenAI-compatible HTTP from a background thread.

    Requests are steps of tasks in ``scheduler`` (a new priority scheduler if None), so
    serving shares the machine with training under one policy. Without ``api_keys`` the
    server answers 127.0.0.1 only.
    """
    return Server(kernel, host=host, port=port, api_keys=api_keys, scheduler=scheduler,
                  max_batch=max_batch, batch_window=batch_window, max_body=max_body,
                  log_level=log_level).start()


def split_spec(spec: str, what: str) -> tuple[str | None, str]:
    """``NAME=VALUE`` -> (NAME, VALUE); a bare ``VALUE`` -> (None, VALUE)."""
    name, sep, value = spec.partition("=")
    if not sep:
        return None, spec
    if not name or not value:
        raise ConfigError(what, spec, "NAME=VALUE with both parts")
    return name, value


def load_models(kernel, models: list[str], tasks: list[str], labels: list[str],
                adapters: list[str], pins: list[str], dtype: str | None = None) -> None:
    """What ``llmos-lab serve`` loads: ``--model [NAME=]SOURCE``, ``--task NAME=TASK``,
    ``--labels NAME=a,b``, ``--adapter MODEL:ADAPTER=PATH``, ``--pin NAME``, ``--dtype``."""
    task_of = dict(split_spec(s, "--task") for s in tasks)
    labels_of = {k: v.split(",") for k, v in (split_spec(s, "--labels") for s in labels)}
    for spec in models:
        name, source = split_spec(spec, "--model")
        name = name or source
        kernel.load(source, name=name, task=task_of.get(name), labels=labels_of.get(name),
                    pin=name in pins, dtype=dtype)
    for spec in adapters:
        target, path = split_spec(spec, "--adapter")
        model, _, adapter = (target or "").partition(":")
        if not model or not adapter:
            raise ConfigError("--adapter", spec, "MODEL:ADAPTER=PATH (a saved PEFT folder)")
        kernel.add_adapter(model, adapter, path)


def read_keys(path: str | None) -> dict | None:
    """``--api-keys FILE``: JSON or YAML, the same mapping as ``serve(api_keys=)``."""
    if path is None:
        return None
    import json
    from pathlib import Path

    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError("--api-keys", path, "an existing JSON or YAML file")
    text = file.read_text(encoding="utf-8")
    data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("--api-keys", path, "a file holding a mapping of key -> settings")
    return data

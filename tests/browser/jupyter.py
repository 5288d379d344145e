"""A throwaway JupyterLab server and a headless Chromium for the browser test.

The server runs this interpreter's ``jupyter lab`` on 127.0.0.1 with a random port and token,
its own config, data and runtime folders (no user settings, workspaces or kernels leak in),
and the venv's kernelspecs and lab extensions, which live under ``sys.prefix`` and are found
there whatever the user has. Chromium is Debian's (``/usr/bin/chromium``, or ``$CHROMIUM``),
driven by Playwright; no browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# JupyterLab settings for a quiet, deterministic page: no news or update checks (they would
# reach for the network), and every cell attached to the DOM so off-screen widgets render.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def chromium_path() -> str | None:
    """``$CHROMIUM`` if set, else Debian's ``/usr/bin/chromium``; None if neither exists."""
    candidate = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    found = shutil.which(candidate)
    return found if found and os.access(found, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running ``jupyter lab``; :meth:`stop` ends it and every process it started."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    children: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method,
            headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n"
                                   f"{self.log()[-4000:]}")
            try:
                self.api("/api/status", timeout=2.0)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer in {timeout:.0f}s:\n{self.log()[-4000:]}")

    def wait_for_kernel(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for a kernel that the page is connected to and that is idle."""
        deadline = time.monotonic() + timeout
        kernels: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            kernels = self.api("/api/kernels")
            self._remember_children()
            for k in kernels:
                if k.get("connections", 0) >= 1 and k.get("execution_state") == "idle":
                    return k
            time.sleep(0.25)
        raise TimeoutError(f"no connected idle kernel after {timeout:.0f}s: {kernels}")

    def _remember_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.children.setdefault(child.pid, child)

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then make sure: SIGTERM, then
        SIGKILL, to the server's process group and to every child it ever had (kernels run in
        sessions of their own, so the group alone would miss them). psutil checks each
        process's start time before signalling it, so a recycled pid is never hit."""
        self._remember_children()
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.api("/api/shutdown", method="POST", timeout=3.0)
                self.process.wait(timeout=10)
        procs = list(self.children.values())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, sig)
            procs = [p for p in procs if p.is_running()]
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
            _, procs = psutil.wait_procs(procs, timeout=5)
            if self.process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=5)
            if not procs and self.process.poll() is not None:
                break


def start_lab(root: Path, home: Path, env: dict[str, str] | None = None) -> LabServer:
    """Start JupyterLab serving ``root``; its config, data and runtime live under ``home``."""
    config, data, runtime = home / "config", home / "data", home / "runtime"
    for folder in (config, data, runtime):
        folder.mkdir(parents=True, exist_ok=True)
    settings = config / "lab" / "user-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ if env is None else env)
    env.update({
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PREFER_ENV_PATH": "1",   # the venv's kernelspec and extensions first
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    port, token = free_port(), secrets.token_hex(16)
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",   # the default one queries PyPI
            "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log_path = home / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    server = LabServer(root, port, token, process, log_path)
    try:
        server.wait_until_up()
    except BaseException:
        server.stop()
        raise
    return server

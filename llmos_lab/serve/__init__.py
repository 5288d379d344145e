"""Serving: the model kernel's calls over HTTP, OpenAI-compatible.

``server.py`` runs uvicorn (a thread, or the foreground for the CLI); ``app.py`` the routes;
``protocol.py`` OpenAI's request and response shapes; ``engine.py`` turns requests into
scheduler steps (continuous batching through ``kernel/decode.py``); ``auth.py`` keys, model
permissions and token rates; ``metrics.py`` Prometheus.

``lab.serve(kernel, port=0)`` is the call users make; this package is itself callable so the
name works both as ``lab.serve(...)`` and as ``import llmos_lab.serve``.
"""

from __future__ import annotations

import sys
import types

from .server import Server, load_models, read_keys, serve

__all__ = ["Server", "load_models", "read_keys", "serve"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Server:
        return serve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

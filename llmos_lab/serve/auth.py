"""Access control: bearer keys, the models each key may use, tenants' token rates.

Keys are compared with ``hmac.compare_digest`` against every configured key (no early exit, so
timing says nothing about which key is close), and never appear in a log, an error or a metric:
a key is named by its tenant. A tenant over ``tokens_per_minute`` (prompt plus generated tokens
in the last 60 s, all its keys together) gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import collections
import hmac
import math
import threading
import time
from dataclasses import dataclass

from ..constraints import COUNT, PRIORITY, check
from ..errors import ConfigError, RequestError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WINDOW_SECONDS = 60.0
KEY_FIELDS = ("tenant", "priority", "models", "tokens_per_minute")


@dataclass(frozen=True)
class ApiKey:
    tenant: str
    priority: int = 1
    models: tuple[str, ...] | None = None  # None: every model
    tokens_per_minute: int | None = None

    def may_use(self, model: str) -> bool:
        """A base model's name grants its adapters too; ``base:adapter`` only that one."""
        return self.models is None or model in self.models or \
            model.split(":", 1)[0] in self.models


def parse_keys(api_keys: dict | None) -> dict[str, ApiKey]:
    """Check the ``api_keys`` mapping once, naming the tenant (never the key) at fault."""
    if api_keys is None:
        return {}
    if not isinstance(api_keys, dict):
        raise ConfigError("api_keys", type(api_keys).__name__, "a dict of key -> settings")
    out = {}
    for i, (key, spec) in enumerate(api_keys.items()):
        where = f"api_keys[#{i}]"
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigError(f"{where} key", "(hidden)", "a string of at least 8 characters")
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise ConfigError(where, type(spec).__name__, f"a dict with {', '.join(KEY_FIELDS)}")
        unknown = set(spec) - set(KEY_FIELDS)
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", "(unknown)",
                              f"one of {', '.join(KEY_FIELDS)}")
        tenant = spec.get("tenant", f"tenant-{i}")
        models = spec.get("models")
        if models is not None and (isinstance(models, str) or not all(
                isinstance(m, str) for m in models)):
            raise ConfigError(f"{where}.models", models, "a list of model names")
        out[key] = ApiKey(str(tenant), check(f"{where}.priority", spec.get("priority", 1),
                                             (PRIORITY,)),
                          None if models is None else tuple(models),
                          check(f"{where}.tokens_per_minute", spec.get("tokens_per_minute"),
                                (COUNT, None)))
    return out


def check_host(host: str, keys: dict[str, ApiKey]) -> str:
    """Without keys the server answers this machine only."""
    if not isinstance(host, str) or not host:
        raise ConfigError("host", host, "an address such as '127.0.0.1'")
    if not keys and host not in LOOPBACK:
        raise ConfigError("host", host, "127.0.0.1 (or another loopback name) unless api_keys "
                          "are set: without keys anyone who reaches the address could use it")
    return host


class Access:
    """Who may call, which models, how fast."""

    def __init__(self, api_keys: dict | None):
        self.keys = parse_keys(api_keys)
        self._spent: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key's settings, or 401. Without configured keys everyone is let in (None)."""
        if not self.keys:
            return None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise RequestError(401, "missing bearer key: send 'Authorization: Bearer <key>'",
                               type="authentication_error", code="invalid_api_key")
        given_b = given.strip().encode()
        found = None
        for key, spec in self.keys.items():  # every key compared: no early exit
            if hmac.compare_digest(given_b, key.encode()):
                found = spec
        if found is None:
            raise RequestError(401, "incorrect API key", type="authentication_error",
                               code="invalid_api_key")
        return found

    def authorize(self, key: ApiKey | None, model: str) -> None:
        if key is not None and not key.may_use(model):
            raise RequestError(403, f"tenant {key.tenant!r} may not use model {model!r}",
                               param="model", type="permission_error",
                               code="model_not_permitted")

    def admit(self, key: ApiKey | None) -> None:
        """429 with Retry-After when the tenant spent its tokens of the last minute."""
        if key is None or key.tokens_per_minute is None:
            return
        now = time.monotonic()
        with self._lock:
            spent = self._spent[key.tenant]
            while spent and spent[0][0] <= now - WINDOW_SECONDS:
                spent.popleft()
            used = sum(n for _, n in spent)
            if used < key.tokens_per_minute:
                return
            over, wait = used - key.tokens_per_minute, WINDOW_SECONDS
            for at, n in spent:  # until enough of the window has expired
                over -= n
                if over < 0:
                    wait = at + WINDOW_SECONDS - now
                    break
        raise RequestError(429, f"tenant {key.tenant!r} is over its rate of "
                           f"{key.tokens_per_minute} tokens per minute", type="rate_limit_error",
                           code="rate_limit_exceeded",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def charge(self, key: ApiKey | None, tokens: int) -> None:
        if key is None or key.tokens_per_minute is None or tokens <= 0:
            return
        with self._lock:
            self._spent[key.tenant].append((time.monotonic(), int(tokens)))

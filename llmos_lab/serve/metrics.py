"""What the server measures, in Prometheus' text format (``prometheus-client``).

Each server has its own ``CollectorRegistry``, so two servers in one notebook (or one test run)
never mix their counts. Evictions and fault-ins come from the kernel's events, filtered to the
kernel this server serves.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import events

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """Counters, gauges and histograms of one server; the engine reports through it."""

    def __init__(self, kernel, queue_state: Callable[[], dict]):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llmos_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.tokens_in = Counter("llmos_tokens_in", "prompt tokens read", registry=r)
        self.tokens_out_count = Counter("llmos_tokens_out", "tokens generated", registry=r)
        self.texts = Counter("llmos_texts_classified", "texts classified or tagged", registry=r)
        self.ttft = Histogram("llmos_time_to_first_token_seconds", "request arrival to its "
                              "first generated token", buckets=LATENCY_BUCKETS, registry=r)
        self.token_latency = Histogram("llmos_token_latency_seconds", "time between two "
                                       "tokens of one sequence", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.request_seconds = Histogram("llmos_request_seconds", "request duration by route",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.running = Gauge("llmos_batch_size", "sequences in the running decode batches",
                             registry=r)
        self.queued = Gauge("llmos_queue_depth", "requests waiting to join a batch",
                            registry=r)
        self.kv_bytes = Gauge("llmos_kv_cache_bytes", "bytes of the running sequences' KV "
                              "caches (outside the kernel's model budget)", registry=r)
        self.kv_bytes.set_function(lambda: sum(v["cache_bytes"] for v in queue_state().values()))
        self.running.set_function(lambda: sum(v["running"] for v in queue_state().values()))
        self.queued.set_function(lambda: sum(v["queued"] for v in queue_state().values()))
        self.evictions = Counter("llmos_evictions", "models evicted from device memory",
                                 registry=r)
        self.fault_ins = Counter("llmos_fault_ins", "evicted models brought back", registry=r)
        self._kernel = kernel
        self._unsubscribe = [events.subscribe("kernel.evict", self._on_kernel),
                             events.subscribe("kernel.fault", self._on_kernel)]

    def _on_kernel(self, event: events.Event) -> None:
        if event.payload.get("kernel") is not self._kernel:
            return
        (self.evictions if event.topic == "kernel.evict" else self.fault_ins).inc()

    # the engine's interface (see engine.NullMetrics)
    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def token(self, seconds: float) -> None:
        self.token_latency.observe(seconds)

    def tokens_out(self, n: int) -> None:
        self.tokens_out_count.inc(n)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def values(self) -> dict[str, float]:
        """Every sample as ``name{label="v"}`` -> value (what ``server.metrics()`` returns)."""
        out = {}
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()

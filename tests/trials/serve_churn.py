"""8 threads x N mixed requests under eviction churn, compared with the same requests sent
one at a time to the same server.

    python -m tests.trials.serve_churn --per-thread 200

Three tiny models and a LoRA adapter share a budget that holds one model at a time, so
nearly every switch evicts one model and faults another back in. Requests mix
classification (base and adapter), token classification, greedy and seeded-sampling
completions and chat. Prints one JSON line: requests, failures, mismatches with the serial
answers, evictions, fault-ins and seconds. The test suite runs 48 of them
(tests/serve/test_sharing.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import llmos_lab as lab
from tests.serve.conftest import answer, same, tiny_kernel
from tests.serve.test_sharing import churn_calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_churn")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=200)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="llmos-churn-"))
    sizes = tiny_kernel(home / "sizes").ps().set_index("name")
    budget = int((sizes["bytes"] + sizes["adapter_bytes"]).max() * 1.3)
    kernel = tiny_kernel(home / "swap", budget=budget)
    total = args.threads * args.per_thread
    calls = churn_calls(-(-total // 6))[:total]
    started = time.perf_counter()
    with lab.serve(kernel, port=0) as server, httpx.Client(base_url=server.url,
                                                           timeout=600) as client:
        serial = [answer(client.post(route, json=body)) for route, body in calls]
        got: list = [None] * total
        failures: list[str] = []

        def worker(w: int) -> None:
            with httpx.Client(base_url=server.url, timeout=600) as c:
                for i in range(w, total, args.threads):
                    try:
                        got[i] = answer(c.post(calls[i][0], json=calls[i][1]))
                    except Exception as exc:
                        failures.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.threads)]
        concurrent_started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = server.metrics()
    differ = [(calls[i], got[i], serial[i]) for i in range(total) if not same(got[i], serial[i])]
    line = {"requests": total, "threads": args.threads, "failures": len(failures),
            "mismatches": len(differ), "first_mismatches": [repr(d)[:400] for d in differ[:3]],
            "evictions": metrics["llmos_evictions_total"],
            "fault_ins": metrics["llmos_fault_ins_total"],
            "concurrent_seconds": round(time.perf_counter() - concurrent_started, 1),
            "seconds": round(time.perf_counter() - started, 1), "first_failures": failures[:3]}
    print(json.dumps(line))
    return 0 if not failures and not line["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())

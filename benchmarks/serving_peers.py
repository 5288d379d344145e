"""The peers ``bench_serving`` measures against, each a real HTTP server in its own process.

- ``per-request``: a plain FastAPI route that calls ``model.generate`` (or one forward pass)
  for each request, the way a first server is written (the seed's Flask design). Routes are
  sync ``def``s, so Starlette runs them on its thread pool, concurrently.
- ``static``: requests wait to fill a batch of ``--batch`` (or ``--wait`` seconds), then one
  left-padded ``model.generate`` runs the whole batch to its end: static batching.

Both load the model the same way the kernel does (``loading.load``) and answer OpenAI's
``/v1/completions`` shape (``prompt``, ``max_tokens``, ``temperature`` 0, ``ignore_eos``) and
``/v1/classify``, so the benchmark's clients send identical requests to every server.

    python -m benchmarks.serving_peers per-request smollm2 --port 0   # prints its URL
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
from concurrent.futures import Future

import torch
import uvicorn
from fastapi import FastAPI, Request

from llmos_lab import inference, loading
from llmos_lab.model_task import ModelTask


def load(name: str, task: str | None, labels: list[str] | None):
    source = loading.Source.resolve(name)
    config = loading.read_config(source)
    task = loading.infer_task(name, config, source, task)
    model, tokenizer, _ = loading.load(source, task, loading.head_kwargs(task, config, None,
                                                                         labels), None)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, task


def _generate(model, tokenizer, prompts: list[str], max_tokens: int, ignore_eos: bool):
    eos = tokenizer.eos_token_id
    ids = [row[:-1] if len(row) > 1 and row[-1] == eos else row  # as the kernel does
           for row in tokenizer(prompts)["input_ids"]]
    batch = inference.collate(ids, tokenizer.pad_token_id, torch.device("cpu"), left=True)
    kw = {"min_new_tokens": max_tokens} if ignore_eos else {}
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, temperature=None,
                             top_p=None, top_k=None, **kw)
    new = out[:, batch["input_ids"].shape[1]:]
    return [(tokenizer.decode(row, skip_special_tokens=True), len(row)) for row in new]


def _completion(text: str, n: int, prompt_tokens: int = 0) -> dict:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text,
                                                      "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n}}


def per_request_app(model, tokenizer, task) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    def complete(body: dict):
        (text, n), = _generate(model, tokenizer, [body["prompt"]], body.get("max_tokens", 16),
                               body.get("ignore_eos", False))
        return _completion(text, n)

    @app.post("/v1/classify")
    def classify(body: dict):
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                        max_length=128)
        with torch.inference_mode():
            probs = torch.softmax(model(**enc).logits, -1)
        labels = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
        return {"data": [{"index": i, "label": label, "score": float(p.max())}
                         for i, (label, p) in enumerate(zip(labels, probs, strict=True))]}

    return app


def static_batch_app(model, tokenizer, batch: int, wait: float) -> FastAPI:
    """Requests queue; a worker takes up to ``batch`` of them and runs them to the end."""
    app = FastAPI()
    pending: list[tuple[dict, Future]] = []
    ready = threading.Condition()

    def worker() -> None:
        while True:
            with ready:
                ready.wait_for(lambda: pending)
                ready.wait_for(lambda: len(pending) >= batch, timeout=wait)
                taken, pending[:] = pending[:batch], pending[batch:]
            bodies = [b for b, _ in taken]
            longest = max(b.get("max_tokens", 16) for b in bodies)
            outs = _generate(model, tokenizer, [b["prompt"] for b in bodies], longest,
                             any(b.get("ignore_eos", False) for b in bodies))
            for (body, future), (text, n) in zip(taken, outs, strict=True):
                future.set_result(_completion(text, min(n, body.get("max_tokens", 16))))

    threading.Thread(target=worker, daemon=True).start()

    @app.post("/v1/completions")
    async def complete(request: Request):
        future: Future = Future()
        with ready:
            pending.append((await request.json(), future))
            ready.notify_all()
        return await asyncio.wrap_future(future)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serving_peers")
    parser.add_argument("kind", choices=["per-request", "static"])
    parser.add_argument("model")
    parser.add_argument("--task", default=None)
    parser.add_argument("--labels", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--wait", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    labels = args.labels.split(",") if args.labels else None
    model, tokenizer, task = load(args.model, args.task, labels)
    app = (per_request_app(model, tokenizer, task) if args.kind == "per-request"
           or task is not ModelTask.CAUSAL_LM else
           static_batch_app(model, tokenizer, args.batch, args.wait))
    sock = socket.socket()
    sock.bind(("127.0.0.1", args.port))
    print(f"serving {args.kind} {args.model} on http://127.0.0.1:{sock.getsockname()[1]}",
          flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(
        sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""OpenAI's shapes: request bodies (validated, naming the field at fault), responses, chunks.

Requests are pydantic models in strict mode with unknown fields refused, so ``"max_tokens":
"5"`` or a typo such as ``"max_token"`` is a 400 naming the field, never a silent default.
``priority`` is this server's one extra field (the scheduler's priority for the request).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import RequestError

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_STOP = 4


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    priority: int | None = Field(default=None, ge=0, le=1000)
    user: str | None = None


class _Sampling(_Body):
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    top_p: float = Field(default=1.0, ge=1.0, le=1.0)  # only the default: no nucleus sampling
    ignore_eos: bool = False  # vLLM's extra: generate max_tokens even past end-of-text

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP or not all(stops):
            raise RequestError(400, f"stop takes up to {MAX_STOP} non-empty strings",
                               param="stop")
        return stops

    def budget(self) -> int | None:
        value = self.max_completion_tokens if self.max_tokens is None else self.max_tokens
        if value is not None and value <= 0:
            field = "max_tokens" if self.max_tokens is not None else "max_completion_tokens"
            raise RequestError(400, f"{field} must be at least 1 (got {value})", param=field)
        if self.n != 1:
            raise RequestError(400, f"n={self.n} is not supported: this server returns one "
                               f"choice per request (n=1); send several requests instead",
                               param="n", code="unsupported_value")
        return value

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = 16  # OpenAI's default for completions

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def plain(self) -> dict[str, str]:
        content = self.content if isinstance(self.content, str) else \
            "".join(p.text for p in self.content)
        return {"role": self.role, "content": content}


class ChatRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]


class ClassifyRequest(_Body):
    input: str | Annotated[list[str], Field(min_length=1, max_length=256)]

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """JSON bytes to a request, or a 400 naming the first field at fault."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # the deepest error: for a union, the member that got furthest names the field best
        located = [([str(x) for x in e["loc"] if not _union_tag(x)], e) for e in exc.errors()]
        loc, err = max(located, key=lambda pair: len(pair[0]))
        param = ".".join(loc) or None
        if err["type"] == "extra_forbidden":
            message = f"unknown or unsupported field {param!r}"
        elif err["type"] == "missing":
            message = f"missing required field {param!r}"
        else:
            message = f"{param}: {err['msg']} (got {_short(err.get('input'))})"
        raise RequestError(400, message, param=param) from None


def _union_tag(part: object) -> bool:
    """pydantic names the member of a union it tried ('str', 'list[str]'): not a field."""
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int = 0) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion_body(rid: str, model: str, text: str, reason: str, used: dict) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            "usage": used}


def chat_body(rid: str, model: str, text: str, reason: str, used: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": reason}],
            "usage": used}


def chunk(rid: str, model: str, chat: bool, text: str | None, reason: str | None = None,
          first: bool = False, used: dict | None = None) -> str:
    """One server-sent event of OpenAI's streaming format."""
    if chat:
        delta = {} if text is None else {"content": text}
        if first:
            delta = {"role": "assistant", "content": text or ""}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [] if used else [choice]}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        body = {"id": rid, "object": "text_completion", "created": int(time.time()),
                "model": model, "choices": [] if used else [choice]}
    if used:
        body["usage"] = used
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"


class TextStream:
    """Token ids in, text out as it becomes final: an incomplete UTF-8 character waits for
    its next token, and text that could be the start of a stop string is held back until it
    is known not to be one. ``stopped`` turns True when a stop string appears; the text ends
    before it."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False
        self.prompt_tokens = 0

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        self.text = text
        for stop in self.stops:
            at = text.find(stop, max(0, self.sent - len(stop)))
            if at >= 0:
                self.text, self.stopped = text[:at], True
                return self._emit(at)
        hold = max((k for s in self.stops for k in range(1, len(s))
                    if text.endswith(s[:k])), default=0)
        return self._emit(len(text) - hold)

    def finish(self) -> str:
        """The held-back tail, once generation ended without a stop string."""
        return "" if self.stopped else self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        end = max(end, self.sent)
        delta, self.sent = self.text[self.sent:end], end
        return delta

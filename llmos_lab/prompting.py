"""Zero- and few-shot classification by prompting a causal LM instead of training one.

Each label is scored by its likelihood after the prompt (``kernel.loglikelihood``), never by
parsing free text, so every text gets exactly one of the labels and a probability for each
(the label likelihoods, normalised over the labels). The prompt is an instruction, ``examples``
labelled texts drawn evenly across the labels from ``train``, then the text:

    Classify each text as one of: negative, neutral, positive.

    Text: what a great day
    Label: positive

    Text: <the text>
    Label: <scored: " negative" | " neutral" | " positive">

A model with a chat template (SmolLM2-Instruct) gets the same content as chat turns: the
instruction and a text from the user, the label from the assistant. The instruction and
examples are the same for every text, so their KV cache is computed once. ``calibrate=True``
applies contextual calibration (Zhao et al., 2021): each label's log-likelihood for a
content-free text ("N/A") is subtracted, which undoes a small model's leaning to one label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import inference
from .datasets import require_columns
from .errors import ConfigError
from .metrics import ClassificationReport


def pick_examples(train: pd.DataFrame, k: int, labels: Sequence[str], *,
                  text_column: str = "text", label_column: str = "label",
                  seed: int = 0) -> pd.DataFrame:
    """``k`` rows of ``train``, as even across ``labels`` as it allows, in a shuffled order
    (so the last example's label does not lean on the answer)."""
    require_columns(train, text=text_column, label=label_column)
    rng = np.random.default_rng(seed)
    pools = {x: list(rng.permutation(np.flatnonzero(train[label_column].astype(str) == x)))
             for x in labels}
    chosen: list[int] = []
    while len(chosen) < k and any(pools.values()):
        for x in labels:
            if pools[x] and len(chosen) < k:
                chosen.append(int(pools[x].pop()))
    rows = train.iloc[rng.permutation(chosen)] if chosen else train.iloc[:0]
    return rows[[text_column, label_column]].reset_index(drop=True)


@dataclass(frozen=True)
class Prompt:
    """Builds the shared prefix and each text's context, as plain text or chat turns."""

    labels: tuple[str, ...]
    instruction: str
    tokenizer: Any = None  # with a chat template: chat turns

    @property
    def chat(self) -> bool:
        return getattr(self.tokenizer, "chat_template", None) is not None

    def prefix(self, examples: Sequence[tuple[str, str]]) -> str:
        """The instruction and the worked examples (everything before the text)."""
        if self.chat:
            return self._render(self._turns(examples), generation=False) if examples else ""
        shots = "".join(f"Text: {_line(t)}\nLabel: {y}\n\n" for t, y in examples)
        return f"{self.instruction}\n\n{shots}"

    def context(self, text: str, examples: Sequence[tuple[str, str]], prefix: str) -> str:
        if not self.chat:
            return f"Text: {_line(text)}\nLabel:"
        whole = self._render([*self._turns(examples), self._user(text)], generation=True)
        if not whole.startswith(prefix):
            raise ConfigError("model", "(chat template)", "a chat template that renders "
                              "earlier turns the same whatever follows")
        return whole[len(prefix):]

    def continuations(self) -> list[str]:
        return list(self.labels) if self.chat else [f" {x}" for x in self.labels]

    def _user(self, text: str) -> dict[str, str]:
        return {"role": "user", "content": f"{self.instruction}\nText: {_line(text)}"}

    def _turns(self, examples: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        turns = []
        for text, label in examples:
            turns += [self._user(text), {"role": "assistant", "content": str(label)}]
        return turns

    def _render(self, turns: list[dict[str, str]], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(turns, tokenize=False,
                                                  add_generation_prompt=generation)


def _line(text: str) -> str:
    return " ".join(str(text).split())  # one line: a newline would read as a new field


def classify(kernel, model: str, texts: Sequence[str] | pd.DataFrame, labels: Sequence[str],
             examples: int | pd.DataFrame = 0, *, train: pd.DataFrame | None = None,
             instruction: str | None = None, calibrate: bool = False,
             text_column: str = "text", label_column: str = "label", batch_size: int = 16,
             seed: int = 0) -> pd.DataFrame:
    """label, score and ``p_<label>`` per text, in input order, like ``kernel.infer``.

    ``examples``: how many labelled rows of ``train`` the prompt shows (0: zero-shot), or the
    rows themselves as a DataFrame.
    """
    labels = _check_labels(labels)
    if isinstance(texts, pd.DataFrame):
        texts = inference.as_texts(texts, column=text_column)
    texts = inference.check_texts(inference.as_texts(texts))
    shots = _examples(examples, train, labels, text_column, label_column, seed)
    pairs = list(zip(shots[text_column], shots[label_column].astype(str), strict=True))
    prompt = Prompt(tuple(labels), instruction or
                    f"Classify the text as one of: {', '.join(labels)}. Answer with the label.",
                    kernel.record(model).tokenizer)
    head = prompt.prefix(pairs)
    contexts = [prompt.context(t, pairs, head) for t in texts]
    if calibrate:
        contexts.append(prompt.context("N/A", pairs, head))
    scores = kernel.loglikelihood(model, contexts, prompt.continuations(), prefix=head,
                                  batch_size=batch_size)
    if calibrate:
        scores = scores[:-1] - scores[-1]
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    return inference.probabilities_frame(probs / probs.sum(axis=1, keepdims=True), labels)


def evaluate(kernel, model: str, data: pd.DataFrame, labels: Sequence[str],
             examples: int | pd.DataFrame = 0, **kw: Any) -> ClassificationReport:
    """``classify`` on a labelled DataFrame, reported like any fine-tuned model."""
    text_column, label_column = kw.get("text_column", "text"), kw.get("label_column", "label")
    require_columns(data, text=text_column, label=label_column)
    pred = classify(kernel, model, data, labels, examples, **kw)
    return ClassificationReport.from_labels(list(data[label_column].astype(str)),
                                            list(pred["label"]), labels=list(labels))


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) < 2:
        raise ConfigError("labels", labels, "a list of two or more label names")
    labels = [str(x) for x in labels]
    blank = [x for x in labels if not x.strip()]
    if blank or len(set(labels)) != len(labels):
        raise ConfigError("labels", labels, "distinct, non-blank label names")
    return labels


def _examples(examples: int | pd.DataFrame, train: pd.DataFrame | None, labels: list[str],
              text_column: str, label_column: str, seed: int) -> pd.DataFrame:
    if isinstance(examples, pd.DataFrame):
        require_columns(examples, text=text_column, label=label_column)
        unknown = set(examples[label_column].astype(str)) - set(labels)
        if unknown:
            raise ConfigError("examples", sorted(unknown), f"examples labelled with {labels}")
        return examples
    if isinstance(examples, bool) or not isinstance(examples, (int, np.integer)) or \
            examples < 0:
        raise ConfigError("examples", examples, "a number of examples >= 0, or a DataFrame")
    if examples and train is None:
        raise ConfigError("train", None, f"a labelled DataFrame to draw {examples} examples "
                          f"from")
    if not examples:
        return pd.DataFrame({text_column: [], label_column: []})
    return pick_examples(train, int(examples), labels, text_column=text_column,
                         label_column=label_column, seed=seed)

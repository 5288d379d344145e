"""The trainer's CPU speed-up keeps its arithmetic: the embedding gradient kept in one buffer
gives AdamW the same update as the dense gradient torch allocates every step."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmos_lab import inference
from llmos_lab.train import rowgrad

TEXTS = ["a short one", "a much longer text with many more words in it", "mid sized text",
         "yet another example sentence", "one", "the last of the texts in this batch"]


def _train(tiny_model, rows: bool, steps: int = 3, micro: int = 2, norms: list | None = None
           ) -> dict[str, torch.Tensor]:
    """``steps`` AdamW steps (clipped, weight decay) over micro-batches, as the trainer takes
    them; returns the parameters after (and each step's gradient norm in ``norms``)."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer(TEXTS)["input_ids"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    embedding = rowgrad.EmbeddingRows(model, torch.device("cpu"))
    assert embedding.active
    for step in range(steps):
        batch = [(step + i) % len(ids) for i in range(4)]  # rows change from step to step
        for part in (batch[:micro], batch[micro:]):
            inputs = inference.collate([ids[i] for i in part], 0, torch.device("cpu"))
            with embedding.sparse() if rows else torch.enable_grad():
                loss = model(**inputs, labels=torch.tensor([i % 2 for i in part])).loss
            (loss / 2).backward()
        if rows:
            assert model.bert.embeddings.word_embeddings.weight.grad.is_sparse
            embedding.densify()
        clip = embedding.clip_ if rows else torch.nn.utils.clip_grad_norm_
        total = clip(list(model.parameters()), 0.005)
        if norms is not None:
            norms.append(float(total))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert not model.bert.embeddings.word_embeddings.sparse  # left as it was
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_embedding_rows_give_the_dense_gradients_update(tiny_model):
    dense_norms, row_norms = [], []
    dense = _train(tiny_model, rows=False, norms=dense_norms)
    rows = _train(tiny_model, rows=True, norms=row_norms)
    assert row_norms == pytest.approx(dense_norms, rel=1e-5)
    assert min(dense_norms) < 0.005 < max(dense_norms)  # steps with and without clipping
    changed = (dense["bert.embeddings.word_embeddings.weight"] !=
               _train(tiny_model, rows=False, steps=0)["bert.embeddings.word_embeddings.weight"])
    assert changed.any(dim=1).sum() >= 10  # the table did train (rows of several steps)
    # equal but for float summation order, carried through three AdamW steps of ~1e-2 each
    for name in dense:
        torch.testing.assert_close(rows[name], dense[name], rtol=1e-4, atol=1e-5, msg=name)


def test_embedding_rows_stay_off_where_they_cannot_help(tiny_model):
    import peft

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    assert not rowgrad.EmbeddingRows(model, torch.device("cpu"), world=2).active  # DDP
    assert not rowgrad.EmbeddingRows(model, torch.device("meta")).active
    lora = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=2,
                                                      target_modules=["query"]))
    off = rowgrad.EmbeddingRows(lora, torch.device("cpu"))  # a frozen table
    assert not off.active
    with off.sparse():
        pass
    off.densify()  # no-ops

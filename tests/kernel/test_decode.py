"""Continuous batching: sequences join and leave a running decode batch, each with its own KV
cache; greedy tokens do not depend on who else is in the batch."""

from __future__ import annotations

import pytest
import torch

import llmos_lab as lab
from llmos_lab.errors import ConfigError, TaskError
from llmos_lab.kernel import DecodeBatch, Sequence
from llmos_lab.kernel.decode import run_to_end
from llmos_lab.kernel.llama import decode_flops, prepare_layout

PROMPTS = ["the cat sat on the mat", "hello", "a much longer prompt about the weather today",
           "one two three four five", "why", "tell me a story about a dragon and a knight"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    k = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32",
                        swap_dir=tmp_path_factory.mktemp("swap"))
    k.load("tiny-llama", name="lm")
    return k


def ids_of(k, text: str) -> list[int]:
    tok = k.record("lm").tokenizer
    row = tok(text)["input_ids"]
    return row[:-1] if row[-1] == tok.eos_token_id else row


def seq(k, text: str, n: int = 12, **kw) -> Sequence:
    return Sequence(ids_of(k, text), n, **kw)


def alone(k, text: str, n: int = 12, **kw) -> list[int]:
    return run_to_end(k.decoder("lm"), [seq(k, text, n, **kw)])[0].tokens


def test_greedy_tokens_are_the_same_alone_batched_and_joining_midway(lm):
    solo = [alone(lm, p) for p in PROMPTS]
    together = [s.tokens for s in run_to_end(lm.decoder("lm"), [seq(lm, p) for p in PROMPTS])]
    assert together == solo
    batch = lm.decoder("lm", max_batch=4)  # joins every other step, waits when full
    staggered = []
    for p in PROMPTS:
        staggered.append(batch.add(seq(lm, p)))
        batch.step()
    while not all(s.done for s in staggered):
        batch.step()
    assert [s.tokens for s in staggered] == solo
    assert all(len(t) == 12 for t in solo) and len({tuple(t) for t in solo}) > 1


def test_greedy_decoding_matches_the_kernels_generate(lm):
    frame = lm.generate("lm", PROMPTS[:3], max_new_tokens=10, batch_size=1)
    tok = lm.record("lm").tokenizer
    for prompt, completion in zip(PROMPTS[:3], frame["completion"], strict=True):
        assert tok.decode(alone(lm, prompt, 10), skip_special_tokens=True) == completion


def test_sequences_leave_when_done_and_the_batch_never_exceeds_its_size(lm):
    batch = lm.decoder("lm", max_batch=2)
    seqs = [batch.add(seq(lm, p, n)) for p, n in zip(PROMPTS, [1, 3, 5, 2], strict=False)]
    sizes, completed = [], []
    unsubscribe = lab.events.subscribe("kernel.generate", lambda e: completed.append(
        e.payload["n"]))
    try:
        while not all(s.done for s in seqs):
            sizes.append(batch.step().batch)
    finally:
        unsubscribe()
    assert sum(completed) == 4  # the kernel's log sees every completed sequence
    assert max(sizes) == 2 and batch.running == 0 and batch.pending == 0
    assert [len(s.tokens) for s in seqs] == [1, 3, 5, 2]
    assert all(s.finish_reason == "length" and s.cache is None for s in seqs)


def test_higher_priority_joins_a_full_batch_first(lm):
    batch = lm.decoder("lm", max_batch=1)
    low = batch.add(seq(lm, "low", 2, priority=1))
    high = batch.add(seq(lm, "high", 2, priority=5))
    batch.step()
    assert high.tokens and not low.tokens


def test_cancel_leaves_at_the_next_step_and_drops_the_cache(lm):
    batch = lm.decoder("lm")
    a, b = batch.add(seq(lm, PROMPTS[0], 50)), batch.add(seq(lm, PROMPTS[1], 50))
    batch.step()
    assert batch.cache_bytes() > 0
    batch.cancel(a)
    result = batch.step()
    assert a in result.finished and a.finish_reason == "cancelled" and a.cache is None
    assert batch.running == 1 and not b.done
    queued = batch.add(seq(lm, PROMPTS[2]))
    batch.cancel(queued)  # never joined
    assert queued.finish_reason == "cancelled" and batch.pending == 0
    batch.cancel(b)
    batch.step()
    assert batch.running == 0 and batch.cache_bytes() == 0


def test_stop_tokens_end_a_sequence_without_being_emitted(lm):
    first = alone(lm, PROMPTS[0], 6)
    s = run_to_end(lm.decoder("lm"), [seq(lm, PROMPTS[0], 6, stop_ids=frozenset([first[3]]))])[0]
    assert s.finish_reason == "stop" and s.tokens == first[:3]


def test_sampling_is_reproducible_per_seed_in_any_batch(lm):
    kw = dict(temperature=1.0, seed=7)
    solo = alone(lm, PROMPTS[0], **kw)
    others = [seq(lm, p, temperature=1.0, seed=i) for i, p in enumerate(PROMPTS[1:])]
    batched = run_to_end(lm.decoder("lm"), [seq(lm, PROMPTS[0], **kw), *others])[0].tokens
    assert batched == solo
    assert alone(lm, PROMPTS[0], temperature=1.0, seed=8) != solo


def test_an_eviction_between_steps_loses_nothing(lm):
    want = alone(lm, PROMPTS[2], 10)
    batch = lm.decoder("lm")
    s = batch.add(seq(lm, PROMPTS[2], 10))
    for _ in range(4):
        batch.step()
    lm.evict("lm")
    assert lm.record("lm").state == "disk"
    while not s.done:
        batch.step()  # faults the model back in; the KV cache stayed with the sequence
    assert s.tokens == want and lm.record("lm").faults >= 1


def test_sequences_on_an_adapter_take_the_models_own_forward(lm):
    k = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    k.load("tiny-llama", name="lm")
    k.add_adapter("lm", "fresh", {"r": 4, "init_lora_weights": False})
    base, tuned = seq(k, PROMPTS[0], 8), seq(k, PROMPTS[0], 8, adapter="fresh")
    run_to_end(k.decoder("lm"), [base, tuned])
    with_adapter = k.generate("lm", PROMPTS[0], max_new_tokens=8, adapter="fresh")
    tok = k.record("lm").tokenizer
    assert tok.decode(tuned.tokens, skip_special_tokens=True) == with_adapter.loc[0, "completion"]
    assert base.tokens == alone(lm, PROMPTS[0], 8)
    assert tuned.tokens != base.tokens


def test_layout_keeps_values_and_saves_contiguous(lm, tmp_path):
    model = lm.record("lm").model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prepare_layout(model)
    q = model.model.layers[0].self_attn.q_proj.weight
    assert not q.is_contiguous() and q.t().is_contiguous()
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()


def test_decoder_needs_a_causal_lm_and_a_positive_batch(lm, tiny_model):
    k = lab.ModelKernel(device="cpu", memory_budget="1GiB", precision="fp32")
    k.load("tiny-bert", name="clf", task="sequence-classification", num_labels=2)
    with pytest.raises(TaskError, match="clf"):
        k.decoder("clf")
    with pytest.raises(ConfigError, match="max_batch"):
        lm.decoder("lm", max_batch=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecodeBatch(lm, "lm").add(Sequence([1, 2], 0))


def test_decode_flops_counts_every_linear_layer(lm):
    model = lm.record("lm").model
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert decode_flops(model, 4) == 2 * 4 * linear
    assert decode_flops(model, 4, context=10) > decode_flops(model, 4)


def test_a_greedy_generation_preempted_five_times_gives_the_same_tokens(lm):
    want = alone(lm, PROMPTS[5], 20)
    batch = lm.decoder("lm")
    s = batch.add(seq(lm, PROMPTS[5], 20))
    other = batch.add(seq(lm, PROMPTS[0], 40))  # the batch goes on without it meanwhile
    steps = 0
    while not s.done:
        batch.step()
        steps += 1
        if steps % 3 == 0 and s.preemptions < 5:
            batch.preempt(s)  # keeps its KV cache while it waits
            batch.step()
            batch.step()      # out for these steps; the other sequence goes on
            assert batch.running == 1 and s.cache is not None and s.preemptions
            batch.resume(s)
    assert s.preemptions == 5 and s.tokens == want
    batch.cancel(other)


def test_a_preemption_that_drops_the_cache_rebuilds_it_from_the_tokens(lm):
    batch = lm.decoder("lm")
    a, b = batch.add(seq(lm, PROMPTS[3], 12)), batch.add(seq(lm, PROMPTS[3], 12))
    for _ in range(5):
        batch.step()
    batch.preempt(a, keep_cache=False)
    batch.step()
    assert a.cache is None and batch.running == 1  # memory given back while it waits
    batch.resume(a)
    batch.step()  # one prefill rebuilds the keys and values the decode steps had written
    n = a.cache.length
    assert n == len(a.prompt) + len(a.tokens) - 1 and a.tokens == b.tokens[:len(a.tokens)]
    torch.testing.assert_close(a.cache.k[:, :, :n], b.cache.k[:, :, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.cache.v[:, :, :n], b.cache.v[:, :, :n], atol=1e-5, rtol=1e-5)
    while not (a.done and b.done):
        batch.step()
    assert len(a.tokens) == 12 and a.preemptions == 1


def test_a_higher_priority_arrival_preempts_the_lowest_in_a_full_batch(lm):
    want = alone(lm, PROMPTS[1], 10)
    batch = lm.decoder("lm", max_batch=1)
    low = batch.add(seq(lm, PROMPTS[1], 10, priority=1))
    batch.step()
    batch.step()
    high = batch.add(seq(lm, PROMPTS[2], 3, priority=5))
    batch.step()
    assert len(low.tokens) == 2 and high.tokens and low.preemptions == 1
    while not (low.done and high.done):
        batch.step()
    assert low.tokens == want and len(high.tokens) == 3


def test_a_preempted_sequence_recomputes_its_cache_when_memory_is_short(lm):
    batch = lm.decoder("lm", max_batch=1)
    low = batch.add(seq(lm, PROMPTS[1], 10, priority=1))
    batch.step()
    budget = lm.memory_budget
    lm.memory_budget = lm.memory()["used"]  # no free memory: a waiting cache cannot stay
    try:
        batch.add(seq(lm, PROMPTS[2], 2, priority=5))
        batch.step()
        assert low.preemptions == 1 and low.cache is None
    finally:
        lm.memory_budget = budget
    while not low.done:
        batch.step()
    assert len(low.tokens) == 10

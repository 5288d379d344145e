"""Model syscalls of the agent runtime: what all blocked agents asked of the kernel goes out
together each round — classifications of one model and adapter as one ``kernel.infer``,
generations as sequences of the model's running decode batch (one token step per round, so a
long generation never holds the others up and is preemptible at every token)."""

from __future__ import annotations

from .. import inference
from ..errors import AgentError
from ..kernel import Sequence
from . import syscalls as sc


class ModelCalls:
    """Mixed into Runtime: expects ``kernel``, ``max_batch``, ``_agents``, ``_classify``,
    ``_batches``, ``_block``, ``_unblock`` and ``_need_kernel``."""

    def batch_priority(self, agent) -> float:
        """Whose generation enters a full decode batch first (higher first), by policy."""
        return {"fifo": 0.0, "rr": -float(agent.generations), "priority": float(agent.priority),
                "stride": -agent.tokens / agent.weight}[self.policy]

    def _do_classify(self, agent, call: sc.Classify) -> None:
        self._need_kernel(agent, call)
        self._block(agent, call, f"model {call.model}")
        self._classify.append(agent)

    def _do_generate(self, agent, call: sc.Generate) -> None:
        self._need_kernel(agent, call)
        rec = self.kernel.record(call.model)
        ids = inference.prompt_ids(rec.tokenizer, call.prompt, call.messages)
        eos = rec.tokenizer.eos_token_id
        agent.seq = Sequence(ids, call.max_tokens, temperature=call.temperature,
                             seed=call.seed, stop_ids=frozenset([] if eos is None else [eos]))
        agent.seq.priority = self.batch_priority(agent)
        agent.generations += 1
        if call.model not in self._batches:
            self._batches[call.model] = self.kernel.decoder(call.model, self.max_batch)
        self._batches[call.model].add(agent.seq)
        self._block(agent, call, f"model {call.model}")


    def _flush_models(self) -> bool:
        """Classifications of one model and adapter as one forward pass; one decode step
        per model with generations. True when anything was computed."""
        groups: dict[tuple, list] = {}
        for agent in self._classify:
            if agent.state == "blocked":
                groups.setdefault((agent.call.model, agent.call.adapter), []).append(agent)
        self._classify = []
        for (model, adapter), agents in groups.items():
            self._classify_group(model, adapter, agents)
        stepped = False
        for batch in self._batches.values():
            if batch.running or batch.pending:
                self._deliver(batch.step())
                stepped = True
        return bool(groups) or stepped

    def _classify_group(self, model: str, adapter: str | None, agents: list) -> None:
        texts = [[c] if isinstance(c, str) else list(c)
                 for c in (a.call.texts for a in agents)]
        try:
            frame = self.kernel.infer(model, [t for ts in texts for t in ts], adapter=adapter,
                                      batch_size=max(1, sum(map(len, texts))))
        except Exception as exc:
            for agent in agents:
                self._unblock(agent, throw=AgentError(f"agent {agent.name!r}: Classify on "
                                                      f"{model!r} failed: {exc}"))
            return
        start = 0
        for agent, ts in zip(agents, texts, strict=True):
            self._unblock(agent, frame.iloc[start:start + len(ts)].reset_index(drop=True))
            start += len(ts)

    def _deliver(self, result) -> None:
        for agent in self._agents.values():
            seq = agent.seq
            if seq is not None and seq in result.finished and agent.state == "blocked":
                tok = self.kernel.record(agent.call.model).tokenizer
                agent.tokens += len(seq.tokens)
                agent.seq = None
                self._unblock(agent, tok.decode(seq.tokens, skip_special_tokens=True))

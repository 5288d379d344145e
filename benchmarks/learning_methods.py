"""The learning methods of bench_learning that change what is learned (one JSON line each).

- ``multitask``: one MiniLM learning tweet sentiment and WNUT-16 NER together (tasks drawn by
  size) against each single-task model trained for the same total number of steps, and for
  the steps its task got inside the mix.
- ``pretrain``: masked-LM continued pre-training on unlabelled tweets, then fine-tuning on a few
  hundred labelled ones, against fine-tuning the shipped MiniLM on them directly (same budget).
- ``continual``: negative-vs-positive tweets first, then neutral-vs-positive from that result:
  the old test set's accuracy before and after (forgetting) and the new one's, with no replay
  and with a quarter of the old rows replayed.
- ``chinese``: MiniLM on MSRA sentences classified by the entity type they mention
  (``msra-topics``), with and without ``extend_vocab``, full and LoRA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import llmos_lab as lab
from benchmarks.bench_kernel import _config, _r
from benchmarks.bench_learning import SEED, Sizes, data, fit
from llmos_lab import datasets


def _steps_config(sizes: Sizes, **kw) -> dict[str, Any]:
    return {"model": sizes.model, "lr": sizes.lr, "batch_size": 16, "max_length": 64,
            "seed": SEED, "device": "cpu", **kw}


def multitask(sizes: Sizes) -> dict[str, Any]:
    train, test = data(sizes)
    ner = datasets.load("wnut16")
    pool = ner[ner["split"] == "train"]
    ner_train = pool.sample(min(sizes.train_rows, len(pool)), random_state=SEED)
    known = {t for tags in ner_train["tags"] for t in tags}
    ner_test = ner[(ner["split"] == "test") & ner["tags"].map(lambda t: set(t) <= known)]
    ner_test = ner_test.head(sizes.test_rows)
    tasks = {"sentiment": {"task": "sequence-classification"},
             "ner": {"task": "token-classification"}}
    multi = lab.Trainer(lab.TrainConfig(**_steps_config(sizes, epochs=1.0), tasks=tasks))
    multi.fit({"sentiment": train, "ner": ner_train})
    reports = multi.evaluate({"sentiment": test, "ner": ner_test})
    steps = multi.total_steps_
    out = {"benchmark": "multitask", "steps": steps,
           "multi_steps_sentiment": multi.steps_per_task_["sentiment"],
           "multi_steps_ner": multi.steps_per_task_["ner"],
           "multi_sentiment_accuracy": _r(reports["sentiment"].accuracy),
           "multi_ner_micro_f1": _r(reports["ner"].to_dict()["micro_f1"])}
    # single-task models with all the steps, and with the steps the task got in the mix
    for tag, budget in (("single", {"sentiment": steps, "ner": steps}),
                        ("single_own_steps", multi.steps_per_task_)):
        sent = lab.Trainer(lab.TrainConfig(**_steps_config(sizes, max_steps=budget["sentiment"])))
        out[f"{tag}_sentiment_accuracy"] = _r(sent.fit(train, progress=False)
                                              .evaluate(test).accuracy)
        tagger = lab.Trainer(lab.TrainConfig(**_steps_config(
            sizes, max_steps=budget["ner"], task="token-classification")))
        out[f"{tag}_ner_micro_f1"] = _r(tagger.fit(ner_train, progress=False)
                                        .evaluate(ner_test).to_dict()["micro_f1"])
    return {**out, "ratio": _r(out["multi_sentiment_accuracy"] /
                               out["single_sentiment_accuracy"]),
            "ratio_of": "multi-task sentiment accuracy / single-task's (same total steps)",
            "parameters_multi": sum(p.numel() for p in multi.model_.parameters()),
            **_config(model=sizes.model, train_rows=len(train), ner_rows=len(ner_train))}


def pretrain(sizes: Sizes) -> dict[str, Any]:
    df = datasets.load("tweets-sentiment")
    _, test = data(sizes)
    unlabelled = df[df["split"] == "train"].sample(
        min(len(df), 4 * sizes.train_rows if not sizes.quick else 64), random_state=1)[["text"]]
    held_out = df[df["split"] == "validation"].head(500 if not sizes.quick else 16)
    labelled = df[df["split"] == "train"].sample(500 if not sizes.quick else 48,
                                                 random_state=2)
    mlm = lab.Trainer(lab.TrainConfig(**_steps_config(sizes, task="masked-lm", epochs=1.0,
                                                      lr=5e-5 if not sizes.quick else 1e-3,
                                                      eval_every=10_000)))
    mlm.fit(unlabelled, held_out[["text"]], progress=False)
    folder = mlm.save(lab.assets.cache_dir() / "bench-mlm")
    rows = {}
    for name, model in (("direct", sizes.model), ("after_mlm", str(folder))):
        tuned = lab.Trainer(lab.TrainConfig(**{**_steps_config(sizes, epochs=3.0),
                                               "model": model}))
        tuned.fit(labelled, progress=False)
        rows[name] = tuned.evaluate(test)
    history = mlm.history_["eval_loss"].dropna()
    return {"benchmark": "pretrain", "mlm_rows": len(unlabelled), "labelled_rows": len(labelled),
            "mlm_steps": mlm.total_steps_, "mlm_eval_loss_last": _r(float(history.iloc[-1])),
            "mlm_perplexity": _r(mlm.evaluate(held_out[["text"]]).perplexity),
            "direct_accuracy": _r(rows["direct"].accuracy),
            "after_mlm_accuracy": _r(rows["after_mlm"].accuracy),
            "direct_macro_f1": _r(rows["direct"].macro_f1),
            "after_mlm_macro_f1": _r(rows["after_mlm"].macro_f1),
            "ratio": _r(rows["after_mlm"].accuracy - rows["direct"].accuracy),
            "ratio_of": "accuracy after continued pre-training - without (fraction)",
            **_config(model=sizes.model, test_rows=len(test))}


def continual(sizes: Sizes) -> dict[str, Any]:
    train, test = data(sizes)
    old_labels, new_labels = {"negative", "positive"}, {"neutral", "positive"}
    old_train = train[train["label"].isin(old_labels)]
    new_train = train[train["label"].isin(new_labels)]
    old_test, new_test = test[test["label"].isin(old_labels)], test[test["label"].isin(new_labels)]
    first = lab.Trainer(lab.TrainConfig(**_steps_config(sizes, epochs=1.0)))
    first.fit(old_train, progress=False)
    folder = first.save(lab.assets.cache_dir() / "bench-continual")
    out = {"benchmark": "continual", "old_before": _r(first.evaluate(old_test).accuracy)}
    for replay in (0.0, 0.25):
        then = lab.Trainer(lab.TrainConfig(**_steps_config(sizes, epochs=1.0),
                                           init_from=str(folder), replay=replay))
        then.fit(new_train, progress=False, replay_data=old_train)
        tag = f"replay_{replay}"
        out[f"{tag}_old_after"] = _r(then.evaluate(old_test).accuracy)
        out[f"{tag}_new_after"] = _r(then.evaluate(new_test).accuracy)
        out[f"{tag}_all_after"] = _r(then.evaluate(test).accuracy)
        out[f"{tag}_forgetting"] = _r(out["old_before"] - out[f"{tag}_old_after"])
    return {**out, "ratio": _r(out["replay_0.25_forgetting"] - out["replay_0.0_forgetting"]),
            "ratio_of": "forgetting with 25% replay - without (accuracy points as a fraction)",
            **_config(model=sizes.model, old_rows=len(old_train), new_rows=len(new_train))}


def chinese(sizes: Sizes) -> dict[str, Any]:
    from transformers import AutoTokenizer

    df = datasets.load("msra-topics")
    train = df[df["split"] == "train"].sample(sizes.train_rows, random_state=SEED)
    test = df[df["split"] == "test"].sample(sizes.test_rows, random_state=SEED)
    tok = AutoTokenizer.from_pretrained(lab.assets.model_path(sizes.model))
    chars = [c for t in test["text"] for c in t]
    unknown = np.mean([tok.unk_token_id in tok(c, add_special_tokens=False)["input_ids"]
                       for c in set(chars)])
    out = {"benchmark": "chinese", "majority_share": _r(float(
        test["label"].value_counts(normalize=True).iloc[0])),
           "unknown_char_share": _r(float(unknown))}
    for method, lr in (("full", sizes.lr * 2), ("lora", 1e-3)):
        for extend in (0, 3000):
            trainer = fit(sizes, train, method=method, lr=lr, extend_vocab=extend,
                          epochs=2.0)
            report = trainer.evaluate(test)
            tag = f"{method}_extend_{extend}"
            out[f"{tag}_accuracy"] = _r(report.accuracy)
            out[f"{tag}_macro_f1"] = _r(report.macro_f1)
            out[f"{tag}_added"] = len(trainer.added_tokens_)
    return {**out, "ratio": _r(out["full_extend_3000_accuracy"] - out["full_extend_0_accuracy"]),
            "ratio_of": "accuracy with extend_vocab=3000 - without (full fine-tune)",
            **_config(model=sizes.model, train_rows=len(train), test_rows=len(test))}


BENCHMARKS = {"multitask": multitask, "pretrain": pretrain, "continual": continual,
              "chinese": chinese}

"""lab.finetune on real SQuAD questions: training lowers the group loss and writes a checkpoint the
reranker loads.
"""

from __future__ import annotations

import json

import pytest
import torch

from lab.datasets import (
    DatasetError,
    Group,
    load_groups,
    load_squad,
    parse_span,
    split,
    write_groups,
)
from lab.finetune import main, mine_negatives
from lab.finetune_tasks import load_base
from lab.training import mean_group_loss
from rag.rerankers import CrossEncoderReranker, RerankerOptions, load_reranker
from tests.cli import run_module
from tests.conftest import write_offline_config


@pytest.fixture(scope="module")
def groups(shared_data) -> list[Group]:
    """24 real SQuAD questions with their gold paragraph and 3 other paragraphs of the same
    article.
    """
    corpus = load_squad(
        shared_data / "squad" / "squad-v1.1-dev-part-a.json", articles=parse_span("1")
    )
    return corpus.groups(negatives=3, seed=0)[:24]


def test_converted_groups_use_the_gold_paragraph_and_same_article_negatives(shared_data):
    corpus = load_squad(
        shared_data / "squad" / "squad-v1.1-dev-part-a.json", articles=parse_span("2")
    )
    made = corpus.groups(negatives=5, seed=1)
    assert len(made) == len(corpus.queries)
    titles = {p.text: p.title for p in corpus.passages}
    for group, query in zip(made, corpus.queries):
        gold = {p.text for p in corpus.passages if p.id in query.gold}
        assert set(group.pos) == gold and not gold & set(group.neg) and len(group.neg) == 5
        assert {titles[t] for t in group.neg} == {titles[group.pos[0]]}
    assert corpus.groups(negatives=5, seed=1) == made != corpus.groups(negatives=5, seed=2)


def test_mined_negatives_come_from_the_window_and_never_repeat_a_positive():
    group = Group("q", ("gold",), ("old",))
    ranked = ["gold", "a", "b", "c", "d", "e", "f"]
    (mined,) = mine_negatives(
        [group], [ranked], span=parse_span("1:5"), negatives=3, seed=0, keep=False
    )
    assert len(mined.neg) == 3 and set(mined.neg) <= {"a", "b", "c", "d"}
    (kept,) = mine_negatives(
        [group], [ranked], span=parse_span("0:3"), negatives=5, seed=0, keep=True
    )
    # the window had only a and b besides gold
    assert kept.neg[0] == "old" and set(kept.neg) == {"old", "a", "b"}


def test_groups_file_round_trip_and_errors(tmp_path, groups):
    path = tmp_path / "g.jsonl"
    assert write_groups(path, groups) == 24 and load_groups(path) == groups
    cases = [
        (
            '{"query": "q", "pos": ["p"], "neg": ["n"]}\n\n[1, 2]\n',
            "g.jsonl, line 3: expected an object",
        ),
        (
            '{"query": "q", "pos": ["p"], "neg": "n"}\n',
            "line 1: 'neg' must be a list of non-empty strings",
        ),
        ("", "no groups"),
    ]
    for text, message in cases:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DatasetError, match=message):
            load_groups(path)
    rest, held = split(list(range(10)), 0.2, seed=0)
    assert len(held) == 2 and sorted(rest + held) == list(range(10))


def test_training_lowers_the_loss_and_the_best_checkpoint_loads_as_a_reranker(
    tmp_path, groups, tiny_cross_encoder
):
    data, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    write_groups(data, groups[:16])
    write_groups(val, groups[16:])
    out = tmp_path / "run"
    with pytest.raises(SystemExit):  # argparse: a group needs a negative
        main(
            [
                "train",
                str(data),
                "--base",
                tiny_cross_encoder,
                "--out",
                str(out),
                "--group-size",
                "1",
            ]
        )
    code = main(
        [
            "train",
            str(data),
            "--val",
            str(val),
            "--base",
            tiny_cross_encoder,
            "--out",
            str(out),
            "--max-steps",
            "12",
            "--eval-steps",
            "6",
            "--batch-size",
            "8",
            "--group-size",
            "4",
            "--lr",
            "4e-3",
            "--warmup",
            "0",
            "--max-len",
            "128",
            "--logging-steps",
            "2",
        ]
    )
    assert code == 0
    report = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    assert report["run"]["train_groups"] == 16 and report["run"]["val_groups"] == 8
    assert [e["step"] for e in report["history"] if "eval_mrr@10" in e] == [6, 12]
    assert set(report["before"]) == {"hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10"}

    tokenizer, base = load_base(tiny_cross_encoder)
    _, trained = load_base(str(out / "checkpoints" / "checkpoint-12"))
    options = dict(group_size=4, max_length=128, seed=0)
    after, before = (mean_group_loss(m, tokenizer, groups[:16], **options) for m in (trained, base))
    print(f"group loss before {before:.4f}, after {after:.4f}")
    assert after < before - 0.05  # deterministic (seeded); measured 1.386 -> 1.299

    reranker = load_reranker(
        "cross-encoder",
        RerankerOptions(
            model=str(out / "best"),
            device="cpu",
            dtype="float32",
            batch_size=8,
            max_length=128,
            normalize="sigmoid",
        ),
    )
    assert isinstance(reranker, CrossEncoderReranker) and reranker.backend == "torch"
    scores, _ = reranker.score_pairs(groups[0].query, [groups[0].pos[0], *groups[0].neg])
    assert len(scores) == 4 and len(set(scores)) == 4
    # The reranker runs the best checkpoint's weights: its scores are that model's own logits.
    best_tokenizer, best = load_base(str(out / "best"))
    with torch.inference_mode():
        inputs = best_tokenizer(
            [groups[0].query] * 4,
            [groups[0].pos[0], *groups[0].neg],
            truncation="only_second",
            max_length=128,
            padding=True,
            return_tensors="pt",
        )
        direct = best.eval()(**inputs).logits[:, 0].tolist()
    assert scores == pytest.approx(direct, abs=1e-5)


def test_resume_continues_from_the_last_checkpoint(tmp_path, groups, tiny_cross_encoder):
    data = tmp_path / "train.jsonl"
    write_groups(data, groups)
    out = tmp_path / "run"
    args = [
        "train",
        str(data),
        "--base",
        tiny_cross_encoder,
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--eval-steps",
        "2",
        "--max-len",
        "96",
        "--val-fraction",
        "0.25",
    ]
    assert main([*args, "--max-steps", "2"]) == 0
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        main([*args, "--max-steps", "4"])
    assert main([*args, "--max-steps", "4", "--resume"]) == 0
    state = json.loads(
        (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8")
    )
    assert state["global_step"] == 4
    assert [e["step"] for e in state["log_history"] if "eval_mrr@10" in e] == [2, 4]
    with pytest.raises(ValueError, match="group_size differ"):
        main([*args, "--max-steps", "6", "--resume", "--group-size", "5"])
    with pytest.raises(ValueError, match="long_passages differ"):
        main([*args, "--max-steps", "6", "--resume", "--long-passages", "best-window"])
    # Each checkpoint says how it read its inputs, so a reranker loaded from it reads the same way.
    reading = json.loads(
        (out / "checkpoints" / "checkpoint-4" / "reading.json").read_text(encoding="utf-8")
    )
    assert reading == {"long_passages": "head", "romanize_hangul": False}


def test_training_reads_the_window_that_use_reads(tiny_cross_encoder):
    """--long-passages best-window: the training batch holds the same passage window the
    reranker scores.
    """
    from lab.finetune_tasks import CrossEncoderTask

    query = "Who finished the bridge over the Kessel river?"
    filler = "The committee met again on Tuesday to discuss the budget for the coming year. "
    passage = (
        filler * 12
        + "The bridge over the Kessel river was finished by Marta Lindqvist. "
        + filler * 2
    )
    task = CrossEncoderTask(tiny_cross_encoder, max_length=64, long_passages="best-window")
    batch = task.collate([{"query": query, "passages": [passage, filler]}])
    reranker = task.reranker(task.model, batch_size=2)
    features, truncated = reranker.encode(query, [passage, filler])
    assert truncated == [True, False]
    rows = [
        [t for t, m in zip(ids, mask) if m]
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())
    ]
    assert rows == [f["input_ids"] for f in features]
    assert "lindqvist" in task.tokenizer.decode(rows[0])
    head = CrossEncoderTask(tiny_cross_encoder, max_length=64).collate(
        [{"query": query, "passages": [passage]}]
    )
    assert "lindqvist" not in task.tokenizer.decode(head["input_ids"][0])


@pytest.mark.slow
def test_mine_from_the_users_collection(tmp_path, readonly_sample_config):
    data = tmp_path / "groups.jsonl"
    write_groups(
        data,
        [
            Group("How long is the battery pack warranty?", ("The battery pack is covered.",), ()),
            Group("How many days of paid sick leave do full-time staff get?", ("Ten days.",), ()),
        ],
    )
    out = tmp_path / "mined.jsonl"
    result = run_module(
        "lab.finetune",
        "mine",
        data,
        "--range",
        "1:8",
        "--negatives",
        "3",
        "--out",
        out,
        "--config",
        readonly_sample_config,
    )
    assert result.returncode == 0, result.stderr
    assert "negatives from collection 'docs-minilm'" in result.stdout
    from rag.config import load_settings
    from rag.pipeline import load_embedder, open_store

    settings = load_settings(readonly_sample_config, env={})
    _, stored = open_store(settings, load_embedder(settings), create=False).all_texts()
    for group in load_groups(out):
        # chunks of the user's collection
        assert len(group.neg) == 3 and set(group.neg) <= set(stored)


@pytest.mark.slow
def test_convert_and_mine_commands(tmp_path, shared_data):
    squad = shared_data / "squad" / "squad-v1.1-dev-part-a.json"
    converted = tmp_path / "groups.jsonl"
    result = run_module(
        "lab.finetune", "convert", "squad", squad, "--articles", "1:2", "--out", converted
    )
    assert result.returncode == 0, result.stderr
    groups = load_groups(converted)
    assert result.stdout.startswith(f"{len(groups)} groups from ")
    mined = tmp_path / "mined.jsonl"
    result = run_module(
        "lab.finetune",
        "mine",
        converted,
        "--corpus",
        "groups",
        "--range",
        "0:10",
        "--negatives",
        "4",
        "--out",
        mined,
        "--config",
        write_offline_config(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    hard = load_groups(mined)
    assert [g.query for g in hard] == [g.query for g in groups]
    assert all(len(g.neg) == 4 and not set(g.neg) & set(g.pos) for g in hard)
    result = run_module(
        "lab.finetune", "train", tmp_path / "missing.jsonl", "--base", "x", "--out", tmp_path / "o"
    )
    assert result.returncode == 2 and "missing.jsonl: file not found" in result.stderr

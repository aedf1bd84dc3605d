"""bAbI QA1-QA5 stories: answers re-derived by an independent simulation that reads only the fact sentences;
BabiLong prompts (exact length, facts in order at their recorded positions) and the scorer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scripted import ScriptedLM

from mta_lab.data.tokenizers import ByteTokenizer
from mta_lab.eval.babi import TASKS, make_story
from mta_lab.eval.babilong import make_sample, run_babilong
from mta_lab.eval.errors import EvalError
from mta_lab.eval.haystack import Haystack

TOK = ByteTokenizer()
HAYSTACK = Haystack([TOK.encode(f"an unrelated line number {i}, nothing to see.\n") for i in range(300)], "test")
OPP = {"north": "south", "south": "north", "east": "west", "west": "east"}


def simulate(facts: list[str], question: str) -> str:
    """The answer from the sentences alone (a second implementation of bAbI's semantics)."""
    at, holder, obj_at, hist, gives, rel = {}, {}, {}, {}, [], []
    for fact in facts:
        if m := re.fullmatch(r"(\w+) (?:moved|went|journeyed|travelled) to the (\w+)\.", fact):
            person, loc = m.groups()
            at[person] = loc
            for obj, who in holder.items():
                if who == person:
                    obj_at[obj] = loc
                    hist.setdefault(obj, []).append(loc)
        elif m := re.fullmatch(r"(\w+) (?:picked up|got|grabbed|took) the (\w+)\.", fact):
            person, obj = m.groups()
            holder[obj] = person
            if person in at:
                obj_at[obj] = at[person]
                hist.setdefault(obj, []).append(at[person])
        elif m := re.fullmatch(r"(\w+) (?:dropped|put down|discarded|left) the (\w+)\.", fact):
            del holder[m.group(2)]
        elif m := re.fullmatch(r"(\w+) (?:gave|handed|passed) the (\w+) to (\w+)\.", fact):
            giver, obj, receiver = m.groups()
            holder[obj] = receiver
            gives.append((giver, obj, receiver))
        elif m := re.fullmatch(r"The (\w+) is (\w+) of the (\w+)\.", fact):
            rel.append(m.groups())
        else:
            raise AssertionError(f"unparsed fact {fact!r}")
    if m := re.fullmatch(r"Where is (\w+)\?", question):
        return at[m.group(1)]
    if m := re.fullmatch(r"Where is the (\w+)\?", question):
        return obj_at[m.group(1)]
    if m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", question):
        h = [loc for i, loc in enumerate(hist[m.group(1)]) if i == 0 or loc != hist[m.group(1)][i - 1]]
        assert h[-1] == m.group(2)
        return h[-2]
    if m := re.fullmatch(r"What is (\w+) of the (\w+)\?", question):
        (a,) = [a for a, d, b in rel if d == m.group(1) and b == m.group(2)]
        return a
    if m := re.fullmatch(r"What is the (\w+) (\w+) of\?", question):
        (a,) = [a for a, d, b in rel if b == m.group(1) and OPP[d] == m.group(2)]
        return a
    if m := re.fullmatch(r"Who gave the (\w+) to (\w+)\?", question):
        return [g for g, o, r in gives if o == m.group(1) and r == m.group(2)][-1]
    if m := re.fullmatch(r"Who did (\w+) give the (\w+) to\?", question):
        return [r for g, o, r in gives if g == m.group(1) and o == m.group(2)][-1]
    if m := re.fullmatch(r"Who received the (\w+)\?", question):
        return [r for g, o, r in gives if o == m.group(1)][-1]
    if m := re.fullmatch(r"Who gave the (\w+)\?", question):
        return [g for g, o, r in gives if o == m.group(1)][-1]
    if m := re.fullmatch(r"What did (\w+) give to (\w+)\?", question):
        return [o for g, o, r in gives if g == m.group(1) and r == m.group(2)][-1]
    raise AssertionError(f"unparsed question {question!r}")


@pytest.mark.parametrize("task", TASKS)
def test_answers_match_an_independent_simulation(task):
    questions = set()
    for i in range(200):
        story = make_story(task, np.random.default_rng([7, i]))
        assert simulate(story.facts, story.question) == story.answer, (story.facts, story.question)
        assert story.supporting and all(0 <= j < len(story.facts) for j in story.supporting)
        questions.add(story.question.split()[0] + story.question.split()[-1][-3:])
    assert len(questions) >= 1


def test_seeds_reproduce_and_facts_are_not_corpus_text(data_cache):
    a = make_sample(HAYSTACK, TOK, task="qa2", length=800, index=3, seed=5)
    assert a == make_sample(HAYSTACK, TOK, task="qa2", length=800, index=3, seed=5)
    assert a["prompt_ids"] != make_sample(HAYSTACK, TOK, task="qa2", length=800, index=3, seed=6)["prompt_ids"]
    from mta_lab.data import DataConfig
    from mta_lab.data.text_data import TextData

    bundle = TextData(DataConfig(cache_dir=str(data_cache)), seq_len=1)
    corpus = "".join(TOK.decode(np.asarray(bundle.tokens(n)).tolist()) for n in bundle.names)
    facts = {f for t in TASKS for i in range(20) for f in make_story(t, np.random.default_rng([1, i])).facts}
    assert not [f for f in facts if f in corpus]  # modern templated sentences; Shakespeare never writes them


@pytest.mark.parametrize("task,length", [("qa1", 0), ("qa3", 900), ("qa5", 1500)])
def test_prompt_length_and_fact_positions(task, length):
    s = make_sample(HAYSTACK, TOK, task=task, length=length, index=0, seed=0)
    ids = s["prompt_ids"]
    if length:
        assert len(ids) == length
    positions = s["fact_positions"]
    assert positions == sorted(positions)
    for fact, pos in zip(s["facts"], positions, strict=True):
        sub = TOK.encode(fact + "\n")
        assert ids[pos:pos + len(sub)] == sub
    assert TOK.decode(ids).endswith(f"\nQuestion: {s['question']}\nAnswer:")


def test_scripted_scores_and_a_story_longer_than_the_length_is_refused():
    kwargs = dict(tasks=["qa1", "qa4", "qa5"], lengths=[0, 700], samples=5, seed=0)
    items = [make_sample(HAYSTACK, TOK, task=t, length=n, index=i, seed=0)
             for t in kwargs["tasks"] for n in kwargs["lengths"] for i in range(5)]
    right = ScriptedLM(TOK, {tuple(s["prompt_ids"]): f" {s['answer']}.\n" for s in items})
    result = run_babilong(right, TOK, HAYSTACK, **kwargs)
    assert result.summary == {"acc": 1.0, "acc_len0": 1.0, "acc_len700": 1.0}
    assert run_babilong(ScriptedLM(TOK, wrong=" nowhere"), TOK, HAYSTACK, **kwargs).summary["acc"] == 0.0
    with pytest.raises(EvalError, match="lengths=100: a qa3 story takes"):
        run_babilong(ScriptedLM(TOK, wrong="x"), TOK, HAYSTACK, tasks=["qa3"], lengths=[100], samples=1)

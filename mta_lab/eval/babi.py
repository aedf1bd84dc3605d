"""A seeded generator of bAbI QA1-QA5 stories (Weston et al. 2015), the facts of BabiLong (paper Figure 5, 7).

Each story is simulated: people move between locations, pick up, drop and hand over objects; every fact sentence
is one event applied to the world state, and the answer is read from that state (not from the sentences).
- qa1 (single supporting fact): people move; "Where is <person>?" -> their last location.
- qa2 (two supporting facts): people move and carry objects; "Where is the <object>?" -> where its holder is,
  or where it was dropped.
- qa3 (three supporting facts): "Where was the <object> before the <location>?" -> the location the object was
  in before it reached its current one (asked only when that current location is not an earlier one too).
- qa4 (two-argument relations): two facts "<A> is <dir> of <B>."; "What is <dir> of the <B>?" or "What is the
  <B> <dir> of?".
- qa5 (three-argument relations): objects handed between people; "Who gave the <o> to <q>?", "Who did <p> give
  the <o> to?", "Who received the <o>?", "Who gave the <o>?", "What did <p> give to <q>?" (the latest such event).
Every story records its facts, the question, the answer and the indices of the supporting facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PEOPLE = ("Mary", "John", "Daniel", "Sandra", "Fred", "Bill", "Julie", "Jeff")
LOCATIONS = ("bathroom", "hallway", "kitchen", "garden", "office", "bedroom")
OBJECTS = ("football", "apple", "milk", "cake", "book")
DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
MOVE_VERBS = ("moved", "went", "journeyed", "travelled")
GRAB_VERBS = ("picked up", "got", "grabbed", "took")
DROP_VERBS = ("dropped", "put down", "discarded", "left")
GIVE_VERBS = ("gave", "handed", "passed")
TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
FACTS = {"qa1": 8, "qa2": 10, "qa3": 12, "qa4": 2, "qa5": 8}  # facts per story


@dataclass
class Story:
    task: str
    facts: list[str]
    question: str
    answer: str
    supporting: list[int]


@dataclass
class World:
    """Where everyone and everything is; `*_fact`: the index of the fact that last set each entry."""

    at: dict[str, str] = field(default_factory=dict)  # person -> location
    holder: dict[str, str] = field(default_factory=dict)  # object -> person holding it
    obj_at: dict[str, str] = field(default_factory=dict)  # object -> location (when known)
    history: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # object -> [(location, fact)]
    move_fact: dict[str, int] = field(default_factory=dict)
    grab_fact: dict[str, int] = field(default_factory=dict)
    gives: list[tuple[str, str, str, int]] = field(default_factory=list)  # (giver, object, receiver, fact)

    def place(self, obj: str, loc: str, fact: int) -> None:
        self.obj_at[obj] = loc
        hist = self.history.setdefault(obj, [])
        if not hist or hist[-1][0] != loc:
            hist.append((loc, fact))

    def move(self, person: str, loc: str, fact: int) -> None:
        self.at[person], self.move_fact[person] = loc, fact
        for obj, who in self.holder.items():
            if who == person:
                self.place(obj, loc, fact)

    def grab(self, person: str, obj: str, fact: int) -> None:
        self.holder[obj], self.grab_fact[obj] = person, fact
        if person in self.at:
            self.place(obj, self.at[person], fact)

    def drop(self, person: str, obj: str) -> None:
        del self.holder[obj]

    def give(self, giver: str, obj: str, receiver: str, fact: int) -> None:
        self.holder[obj] = receiver
        self.gives.append((giver, obj, receiver, fact))


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _events(rng: np.random.Generator, n: int, *, objects: bool, gives: bool) -> tuple[list[str], World]:
    world, facts = World(), []
    people = [PEOPLE[i] for i in rng.choice(len(PEOPLE), size=4 if not gives else 3, replace=False)]
    things = [OBJECTS[i] for i in rng.choice(len(OBJECTS), size=2, replace=False)] if objects or gives else []
    while len(facts) < n:
        i = len(facts)
        free = [o for o in things if o not in world.holder and (o not in world.obj_at or any(
            world.at.get(p) == world.obj_at[o] for p in people))]
        held = [o for o in things if o in world.holder]
        options = ["move"] + (["grab"] if free else []) + (["drop"] if objects and held else []) \
            + (["give", "give"] if gives and held else [])
        kind = _pick(rng, options)
        if kind == "move":
            person = _pick(rng, people)
            loc = _pick(rng, [l for l in LOCATIONS if l != world.at.get(person)])
            facts.append(f"{person} {_pick(rng, MOVE_VERBS)} to the {loc}.")
            world.move(person, loc, i)
        elif kind == "grab":
            obj = _pick(rng, free)
            where = world.obj_at.get(obj)
            person = _pick(rng, [p for p in people if where is None or world.at.get(p) == where])
            facts.append(f"{person} {_pick(rng, GRAB_VERBS)} the {obj}.")
            world.grab(person, obj, i)
        elif kind == "drop":
            obj = _pick(rng, held)
            facts.append(f"{world.holder[obj]} {_pick(rng, DROP_VERBS)} the {obj}.")
            world.drop(world.holder[obj], obj)
        else:
            obj = _pick(rng, held)
            giver = world.holder[obj]
            receiver = _pick(rng, [p for p in people if p != giver])
            facts.append(f"{giver} {_pick(rng, GIVE_VERBS)} the {obj} to {receiver}.")
            world.give(giver, obj, receiver, i)
    return facts, world


def _qa1(rng, n):
    facts, world = _events(rng, n, objects=False, gives=False)
    person = _pick(rng, sorted(world.at))
    return Story("qa1", facts, f"Where is {person}?", world.at[person], [world.move_fact[person]])


def _qa2(rng, n):
    facts, world = _events(rng, n, objects=True, gives=False)
    known = sorted(o for o in world.obj_at if o in world.grab_fact)
    if not known:
        return None
    obj = _pick(rng, known)
    support = {world.grab_fact[obj], world.history[obj][-1][1]}
    return Story("qa2", facts, f"Where is the {obj}?", world.obj_at[obj], sorted(support))


def _qa3(rng, n):
    facts, world = _events(rng, n, objects=True, gives=False)
    usable = sorted(o for o, h in world.history.items()
                    if len(h) >= 2 and h[-1][0] not in [loc for loc, _ in h[:-1]])
    if not usable:
        return None
    obj = _pick(rng, usable)
    (before, f1), (now, f2) = world.history[obj][-2:]
    support = sorted({f1, f2, world.grab_fact[obj]})
    return Story("qa3", facts, f"Where was the {obj} before the {now}?", before, support)


def _qa4(rng, n):
    a, b, c = (LOCATIONS[i] for i in rng.choice(len(LOCATIONS), size=3, replace=False))
    d1 = _pick(rng, DIRECTIONS)
    d2 = _pick(rng, [d for d in DIRECTIONS if d != d1])
    facts = [f"The {a} is {d1} of the {b}.", f"The {c} is {d2} of the {b}."]
    order = list(rng.permutation(2))
    facts = [facts[i] for i in order]
    which = int(rng.integers(2))  # ask about the fact (a, d1) or (c, d2)
    thing, d = (a, d1) if which == 0 else (c, d2)
    support = [order.index(which)]
    if rng.integers(2):
        return Story("qa4", facts, f"What is {d} of the {b}?", thing, support)
    return Story("qa4", facts, f"What is the {b} {OPPOSITE[d]} of?", thing, support)


def _qa5(rng, n):
    facts, world = _events(rng, n, objects=False, gives=True)
    if not world.gives:
        return None
    giver, obj, receiver, fact = world.gives[-1 - int(rng.integers(len(world.gives)))]
    form = int(rng.integers(5))
    if form == 0:
        last = [g for g in world.gives if g[1] == obj and g[2] == receiver][-1]
        return Story("qa5", facts, f"Who gave the {obj} to {receiver}?", last[0], [last[3]])
    if form == 1:
        last = [g for g in world.gives if g[0] == giver and g[1] == obj][-1]
        return Story("qa5", facts, f"Who did {giver} give the {obj} to?", last[2], [last[3]])
    last_of_obj = [g for g in world.gives if g[1] == obj][-1]
    if form == 2:
        return Story("qa5", facts, f"Who received the {obj}?", last_of_obj[2], [last_of_obj[3]])
    if form == 3:
        return Story("qa5", facts, f"Who gave the {obj}?", last_of_obj[0], [last_of_obj[3]])
    last = [g for g in world.gives if g[0] == giver and g[2] == receiver][-1]
    return Story("qa5", facts, f"What did {giver} give to {receiver}?", last[1], [last[3]])


BUILDERS = {"qa1": _qa1, "qa2": _qa2, "qa3": _qa3, "qa4": _qa4, "qa5": _qa5}


def make_story(task: str, rng: np.random.Generator, n_facts: int | None = None) -> Story:
    """A story of `task` with `n_facts` facts (default FACTS[task]); redrawn until a question is answerable."""
    n = n_facts or FACTS[task]
    if task == "qa4":
        n = 2
    for _ in range(1000):
        story = BUILDERS[task](rng, n)
        if story is not None:
            return story
    raise RuntimeError(f"no answerable {task} story in 1000 draws of {n} facts")  # not reached with FACTS

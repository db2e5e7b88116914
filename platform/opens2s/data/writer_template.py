"""Stage 2 (offline writer): compose an empathetic dialogue script from the content bank.

The user's turns carry the scenario's emotion (openers, feeling sentences at the scenario's
intensity, reactions); the assistant acknowledges, validates, suggests a concrete step and asks a
question. Slots (who, when, the situation's things and places) are chosen once per dialogue, so a
script stays consistent while thousands of scripts stay distinct. Seeded by (seed, index).

A lexically neutral dialogue (``scenario.lexically_neutral``, a minimal-pair member) has user turns
that say what happened and nothing about how it felt (no phrase the emotion lexicon flags), drawn
from the pair's seed so every member says the same words; the assistant still answers the
member's own emotion, which only the voice carries.
"""

from __future__ import annotations

import re

import numpy as np

from opens2s.config.data import ScenarioSettings
from opens2s.data import content
from opens2s.data.sample import Sample, Turn

STAGE = "writer"
_SLOT = re.compile(r"\{(\w+)\}")


class _Composer:
    """Draws phrases for one dialogue from a seeded generator, without repeating a phrase."""

    def __init__(self, rng: np.random.Generator, slots: dict[str, str]) -> None:
        self.rng = rng
        self.slots = slots
        self.used: set[str] = set()

    def pick(self, options: tuple[str, ...]) -> str:
        fresh = [o for o in options if o not in self.used] or list(options)
        choice = fresh[int(self.rng.integers(len(fresh)))]
        self.used.add(choice)
        return _SLOT.sub(lambda m: self.slots.get(m.group(1), m.group(0)), choice)


def _sentence_case(text: str) -> str:
    """Capitalise the first letter of the text and of each sentence; tidy spaces."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"([.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text[:1].upper() + text[1:]


def _end(text: str) -> str:
    return text if text[-1:] in ".!?" else text + "."


def _without_emotion_words(options: tuple[str, ...]) -> tuple[str, ...]:
    """The options the emotion lexicon does not flag (all of them if it flags every one)."""
    kept = tuple(o for o in options if not content.emotion_words_in(o))
    return kept or options


def _neutral_user_turns(sample: Sample, seed: int) -> tuple[list[str], int, dict[str, str]]:
    """User turns of a minimal pair (the same for every member): text, event number, slots."""
    sc = sample.scenario
    rng = np.random.default_rng([seed, sc.pair, 5])
    situation = content.situation_by_name(sc.situation)
    persona = content.persona_by_name(sc.persona)
    slots = {"who": persona.people[int(rng.integers(len(persona.people)))]}
    slots["when"] = content.WHEN[int(rng.integers(len(content.WHEN)))]
    for name, values in situation.fillers.items():
        slots[name] = values[int(rng.integers(len(values)))]
    c = _Composer(rng, slots)
    events = [e for e in situation.events if not content.emotion_words_in(e)] or situation.events
    event_no = situation.events.index(events[int(rng.integers(len(events)))])
    details = _without_emotion_words(situation.details)
    parts = [c.pick(content.NEUTRAL_OPENERS)]
    if rng.random() < 0.4:
        parts.append(c.pick(_without_emotion_words(persona.intro)) + ", and")
    parts.append(_SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), situation.events[event_no]))
    parts[-1] += "."
    parts.append(c.pick(content.NEUTRAL_DETAIL_LEADS) + " " + _end(c.pick(details)))
    turns = [_sentence_case(" ".join(parts))]
    for _ in range(sc.exchanges - 1):
        follow = [c.pick(content.NEUTRAL_REACTS)]
        follow.append(c.pick(content.NEUTRAL_DETAIL_LEADS) + " " + _end(c.pick(details)))
        turns.append(_sentence_case(" ".join(follow)))
    return turns, event_no, slots


def neutral_user_turns(sample: Sample, seed: int) -> list[str]:
    """The user turns every member of ``sample``'s minimal pair says (lexically neutral)."""
    return _neutral_user_turns(sample, seed)[0]


def write_script(sample: Sample, seed: int) -> list[Turn]:
    """The turns of one dialogue for ``sample``'s scenario (deterministic in seed and index)."""
    sc = sample.scenario
    if sc.lexically_neutral:
        return _write_minimal_pair_member(sample, seed)
    rng = np.random.default_rng([seed, sample.index, 2])
    situation = content.situation_by_name(sc.situation)
    persona = content.persona_by_name(sc.persona)
    slots = {"who": persona.people[int(rng.integers(len(persona.people)))]}
    slots["when"] = content.WHEN[int(rng.integers(len(content.WHEN)))]
    for name, values in situation.fillers.items():
        slots[name] = values[int(rng.integers(len(values)))]
    c = _Composer(rng, slots)
    # The assistant speaks of the user's people as "your ...".
    a = _Composer(rng, {**slots, "who": re.sub(r"^my ", "your ", slots["who"])})
    a.used = c.used
    feel = content.phrases_for(sc.emotion)
    feel_key = "feel_strong" if sc.intensity >= 0.75 else "feel_mild"

    opener = c.pick(feel["open"])
    event_no = int(rng.integers(len(situation.events)))
    event = _SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), situation.events[event_no])
    parts = []
    if rng.random() < 0.4:
        parts.append(c.pick(persona.intro) + ", and")
        parts.append(event + ".")
        parts.insert(0, opener)
    else:
        parts += [opener, event + "."]
    if rng.random() < 0.5:
        parts.append(c.pick(content.DETAIL_LEADS) + " " + _end(c.pick(situation.details)))
    parts.append(c.pick(feel[feel_key]))
    if feel is content.EMOTION_PHRASES["neutral"] and sc.emotion.lower() not in ("neutral", "calm"):
        parts.append(f"I feel {sc.emotion.lower()} about it.")
    turns = [Turn("user", _sentence_case(" ".join(parts)))]

    for exchange in range(sc.exchanges):
        if exchange == 0 and event_no < len(situation.steps):
            # Steps are listed in the order of the events they answer.
            step = a.pick((situation.steps[event_no],))
        else:
            step = a.pick(situation.steps)
        help_line = a.pick(content.HELP_LEADS).replace("{step}", step)
        if exchange == 0:
            reply = [a.pick(feel["ack"]), a.pick(feel["validate"]), help_line]
            reply.append(a.pick(content.QUESTIONS))
        else:
            reply = [a.pick(content.ENCOURAGE), help_line, a.pick(content.CLOSINGS)]
        turns.append(Turn("assistant", _sentence_case(" ".join(reply))))
        if exchange + 1 < sc.exchanges:
            follow = [
                c.pick(feel["react"]),
                c.pick(content.DETAIL_LEADS) + " " + _end(c.pick(situation.details)),
            ]
            if rng.random() < 0.5:
                follow.append(c.pick(feel["feel_mild"]))
            turns.append(Turn("user", _sentence_case(" ".join(follow))))
    return turns


def _write_minimal_pair_member(sample: Sample, seed: int) -> list[Turn]:
    """A lexically neutral script: the pair's user words, replies fitting this member's emotion."""
    sc = sample.scenario
    user_turns, event_no, slots = _neutral_user_turns(sample, seed)
    situation = content.situation_by_name(sc.situation)
    rng = np.random.default_rng([seed, sample.index, 2])
    a = _Composer(rng, {**slots, "who": re.sub(r"^my ", "your ", slots["who"])})
    feel = content.phrases_for(sc.emotion)
    turns = []
    for exchange, user_text in enumerate(user_turns):
        turns.append(Turn("user", user_text))
        if exchange == 0 and event_no < len(situation.steps):
            step = a.pick((situation.steps[event_no],))
        else:
            step = a.pick(situation.steps)
        help_line = a.pick(content.HELP_LEADS).replace("{step}", step)
        if exchange == 0:
            reply = [a.pick(feel["ack"]), a.pick(feel["validate"]), help_line]
            reply.append(a.pick(content.QUESTIONS))
        else:
            reply = [a.pick(content.ENCOURAGE), help_line, a.pick(content.CLOSINGS)]
        turns.append(Turn("assistant", _sentence_case(" ".join(reply))))
    return turns


def write_template_scripts(samples: list[Sample], settings: ScenarioSettings) -> list[Sample]:
    """Give every live sample a script from the template writer; a failure quarantines one."""
    for s in samples:
        if not s.ok:
            continue
        try:
            s.turns = write_script(s, settings.seed)
            s.writer = "template"
            s.attempts = 1
        except Exception as e:  # a bad scenario name must not stop the other samples
            s.drop(STAGE, f"template writer failed: {type(e).__name__}: {e}")
    return samples

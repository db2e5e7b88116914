"""Lexically neutral dialogues: minimal pairs share the user's words, speaker and situation, differ
in emotion and in the reply; the share is kept; validation's emotion lexicon refuses an emotion
word in their user turns; the LLM writer's prompt hands it the pair's words and refuses others."""

from __future__ import annotations

import json
from collections import defaultdict

from opens2s.config.audio import AudioSection
from opens2s.config.data import ScenarioSettings, ValidationSettings
from opens2s.data import content
from opens2s.data.sample import Turn
from opens2s.data.scenarios import make_scenarios, resolve_scenario_settings
from opens2s.data.validation import validate_scripts
from opens2s.data.writer_llm import accept_answer, script_messages
from opens2s.data.writer_template import neutral_user_turns, write_template_scripts

SCEN = resolve_scenario_settings(
    ScenarioSettings(num_dialogues=140, max_exchanges=2), audio=AudioSection()
)


def test_share_and_pairs_share_words_voice_and_differ_in_emotion_and_reply():
    samples = write_template_scripts(make_scenarios(list(range(140)), SCEN, 10), SCEN)
    neutral = [s for s in samples if s.scenario.lexically_neutral]
    assert 0.30 <= len(neutral) / len(samples) <= SCEN.neutral_share
    pairs = defaultdict(list)
    for s in neutral:
        pairs[s.scenario.pair].append(s)
    assert all(len(members) == SCEN.pair_size for members in pairs.values())
    for members in pairs.values():
        a, b = members
        assert a.scenario.emotion != b.scenario.emotion
        assert (a.scenario.speaker, a.scenario.situation) == (
            b.scenario.speaker,
            b.scenario.situation,
        )
        user = [[t.text for t in s.turns if t.role == "user"] for s in members]
        reply = [[t.text for t in s.turns if t.role == "assistant"] for s in members]
        assert user[0] == user[1] and reply[0] != reply[1]
        assert not any(content.emotion_words_in(t) for t in user[0])
        # the reply fits the member's own emotion: it opens with that emotion's acknowledgement
        for s in members:
            first = s.turns[1].text
            acks = content.phrases_for(s.scenario.emotion)["ack"]
            assert any(first.startswith(ack[:-1]) for ack in acks), (s.scenario.emotion, first)
    # emotional dialogues keep their emotion words
    emotional = [
        s for s in samples if not s.scenario.lexically_neutral and s.scenario.emotion != "neutral"
    ]
    flagged = sum(bool(content.emotion_words_in(s.turns[0].text)) for s in emotional)
    assert flagged / len(emotional) > 0.8
    assert all(s.ok for s in validate_scripts(samples, ValidationSettings(), SCEN))


def test_lexicon_refuses_an_emotion_word_in_a_neutral_users_turn():
    sample = next(s for s in make_scenarios(list(range(7)), SCEN, 10) if s.scenario.pair >= 0)
    sample.turns = [
        Turn("user", "So, my sister called me this morning and I am furious about it."),
        Turn("assistant", "That sounds really frustrating. What happened next?"),
    ]
    (out,) = validate_scripts([sample], ValidationSettings(), SCEN)
    assert out.dropped_stage == "validation"
    assert out.dropped_reason.startswith("lexicon: user turn 0") and "furious" in out.dropped_reason
    assert content.emotion_words_in("It happened in Madrid, the painter made it.") == []
    assert content.emotion_words_in("I was so happily worried and crying") == [
        "happily",
        "worried",
        "crying",
    ]


def test_llm_writer_gets_the_pairs_words_and_must_keep_them():
    sample = next(s for s in make_scenarios(list(range(7)), SCEN, 10) if s.scenario.pair >= 0)
    words = neutral_user_turns(sample, SCEN.seed)
    _, user = script_messages(sample, SCEN.seed)
    assert json.dumps(words) in user["content"] and "only in their voice" in user["content"]
    reply = "I hear you, thank you for telling me. What would help most right now?"
    good = {"turns": [{"role": "user", "text": words[0]}, {"role": "assistant", "text": reply}]}
    if sample.scenario.exchanges == 1:
        assert accept_answer(sample, json.dumps(good), ValidationSettings(), SCEN) is None
    other = {"turns": [{"role": "user", "text": "So, I went out today."}, good["turns"][1]]}
    problem = accept_answer(sample, json.dumps(other), ValidationSettings(), SCEN)
    assert problem and ("minimal pair" in problem or "exchanges" in problem)

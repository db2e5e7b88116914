"""Stage 1, scenarios: sample index -> emotion x intensity x situation x persona x speaker.

Everything is a pure function of (seed, index): the same settings give the same scenarios and ids
whatever the batching or the number of workers. Emotions are balanced exactly: each run of
``len(emotions)`` consecutive indices (a round) holds every emotion once, in a seeded order.

Lexically neutral dialogues (``neutral_share``) are whole minimal pairs taken from the first slots
of a round: the ``pair_size`` members of a pair have different emotions (a round holds each once)
and share situation, persona, speaker, intensity and exchanges, drawn from the pair's own seed, so
the writers give them the same user words and only the voice differs.
"""

from __future__ import annotations

import math

import numpy as np

from opens2s.config.audio import AudioSection
from opens2s.config.data import ScenarioSettings
from opens2s.data import content
from opens2s.data.sample import Sample, Scenario, sample_id

STAGE = "scenarios"


def resolve_scenario_settings(
    settings: ScenarioSettings, *, audio: AudioSection
) -> ScenarioSettings:
    """Fill the lists left as None (emotions, speakers, situations, personas) from the TTS and
    the content bank, and check named situations/personas exist. Done once, on the driver."""
    update: dict = {}
    if settings.emotions is None or settings.user_speakers is None:
        from opens2s.audio import tts

        if settings.emotions is None:
            update["emotions"] = list(tts.EMOTIONS)
        if settings.user_speakers is None:
            speakers = tts.speaker_names(audio)
            if audio.assistant_speaker not in speakers:
                raise ValueError(
                    f"audio.assistant_speaker {audio.assistant_speaker!r} is not a speaker of the "
                    f"{audio.tts_engine} TTS (known: {', '.join(speakers)})"
                )
            update["user_speakers"] = [s for s in speakers if s != audio.assistant_speaker]
    if settings.situations is None:
        update["situations"] = [s.name for s in content.SITUATIONS]
    else:
        for name in settings.situations:
            content.situation_by_name(name)
    if settings.personas is None:
        update["personas"] = [p.name for p in content.PERSONAS]
    else:
        for name in settings.personas:
            content.persona_by_name(name)
    resolved = settings.model_copy(update=update)
    for field in ("emotions", "user_speakers", "situations", "personas", "intensities"):
        if not getattr(resolved, field):
            raise ValueError(f"data.scenarios.{field} is empty; give at least one value")
    if resolved.neutral_share > 0 and resolved.pair_size > len(resolved.emotions):
        raise ValueError(
            f"data.scenarios.pair_size ({resolved.pair_size}) exceeds the {len(resolved.emotions)}"
            " emotions: a minimal pair needs a different emotion per member"
        )
    return resolved


def pairs_before(round_no: int, settings: ScenarioSettings) -> int:
    """Minimal pairs in rounds ``0 .. round_no - 1``: the share rounded down to whole pairs,
    cumulatively (so the running share never drifts), at most ``len(emotions) // pair_size`` a
    round."""
    per_round = len(settings.emotions) * settings.neutral_share / settings.pair_size
    cap = len(settings.emotions) // settings.pair_size
    return min(int(math.floor(round_no * per_round + 1e-9)), round_no * cap)


def pair_of(index: int, settings: ScenarioSettings) -> int:
    """The minimal pair sample ``index`` belongs to, or -1 when its words may carry emotion."""
    if settings.neutral_share <= 0:
        return -1
    round_no, slot = divmod(index, len(settings.emotions))
    first = pairs_before(round_no, settings)
    count = pairs_before(round_no + 1, settings) - first
    if slot >= count * settings.pair_size:
        return -1
    return first + slot // settings.pair_size


def shard_of(index: int, shard_size: int) -> int:
    """The shard a sample index belongs to."""
    return index // shard_size


def scenario_for(index: int, settings: ScenarioSettings) -> Scenario:
    """The scenario of sample ``index`` (settings must be resolved: no None lists)."""
    emotions = settings.emotions
    if emotions is None or settings.user_speakers is None:
        raise ValueError("scenario settings are not resolved; call resolve_scenario_settings")
    round_no, slot = divmod(index, len(emotions))
    order = np.random.default_rng([settings.seed, round_no, 17]).permutation(len(emotions))
    pair = pair_of(index, settings)
    # A pair's members draw everything but the emotion from the pair's seed: same words, voice.
    key = [settings.seed, index, 1] if pair < 0 else [settings.seed, pair, 29]
    rng = np.random.default_rng(key)
    return Scenario(
        emotion=emotions[int(order[slot])],
        intensity=float(settings.intensities[rng.integers(len(settings.intensities))]),
        situation=settings.situations[rng.integers(len(settings.situations))],
        persona=settings.personas[rng.integers(len(settings.personas))],
        speaker=settings.user_speakers[rng.integers(len(settings.user_speakers))],
        exchanges=int(rng.integers(settings.min_exchanges, settings.max_exchanges + 1)),
        lexically_neutral=pair >= 0,
        pair=pair,
    )


def make_scenarios(indices: list[int], settings: ScenarioSettings, shard_size: int) -> list[Sample]:
    """Samples (id, shard, scenario) for the given indices."""
    return [
        Sample(
            id=sample_id(settings.seed, i),
            index=i,
            shard=shard_of(i, shard_size),
            scenario=scenario_for(i, settings),
        )
        for i in indices
    ]

"""Each corpus stage alone on a list of samples: scenarios, template writer, validation,
rendering (real espeak-ng), filters, and the stage runner's quarantine of a failing batch."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from opens2s import storage
from opens2s.config.audio import AudioSection
from opens2s.config.data import FilterSettings, ScenarioSettings, ValidationSettings
from opens2s.data import output
from opens2s.data.filters import AudioFilter, silence_ratio
from opens2s.data.pipeline import run_stage
from opens2s.data.render import TurnRenderer
from opens2s.data.sample import Turn, batch_to_samples, samples_to_batch
from opens2s.data.scenarios import make_scenarios, resolve_scenario_settings
from opens2s.data.validation import validate_scripts
from opens2s.data.variety import distinct_ngrams, nearest_neighbour_similarity
from opens2s.data.writer_template import write_template_scripts

AUDIO = AudioSection()


def _settings(**kw) -> ScenarioSettings:
    return resolve_scenario_settings(ScenarioSettings(**kw), audio=AUDIO)


def test_scenarios_are_seeded_balanced_and_independent_of_batching() -> None:
    s = _settings(num_dialogues=70, seed=3)
    whole = make_scenarios(list(range(70)), s, 10)
    pieces = make_scenarios(list(range(35, 70)), s, 10) + make_scenarios(list(range(35)), s, 10)
    by_id = {x.id: x for x in pieces}
    assert [x.id for x in whole] == [x.id for x in make_scenarios(list(range(70)), s, 10)]
    assert all(by_id[x.id].scenario == x.scenario for x in whole)
    counts = Counter(x.scenario.emotion for x in whole)
    assert set(counts) == set(s.emotions) and set(counts.values()) == {10}
    assert len({x.scenario.speaker for x in whole}) > 10
    assert AUDIO.assistant_speaker not in {x.scenario.speaker for x in whole}
    other = make_scenarios(list(range(70)), _settings(num_dialogues=70, seed=4), 10)
    assert not {x.id for x in other} & {x.id for x in whole}
    assert [x.shard for x in whole[9:11]] == [0, 1]


def test_template_writer_10k_dialogues_are_distinct_not_near_duplicates() -> None:
    s = _settings(num_dialogues=10_000, max_exchanges=3)
    samples = write_template_scripts(make_scenarios(list(range(10_000)), s, 100), s)
    assert all(x.ok for x in samples)
    texts = [" ".join(t.text for t in x.turns) for x in samples]
    assert len(set(texts)) == len(texts)
    distinct3, total3 = distinct_ngrams(texts, 3)
    assert distinct3 > 17_000, (distinct3, total3)
    nearest = nearest_neighbour_similarity(texts, probes=25)
    assert max(nearest) < 0.7 and float(np.mean(nearest)) < 0.45, nearest
    # The user speaks with the scenario's emotion; the assistant answers last.
    x = samples[0]
    assert x.turns[0].role == "user" and x.turns[-1].role == "assistant"
    assert len(x.turns) == 2 * x.scenario.exchanges


def test_validation_normalises_typography_and_quarantines_unspeakable_scripts() -> None:
    s = _settings(num_dialogues=5)
    samples = write_template_scripts(make_scenarios(list(range(5)), s, 10), s)
    samples[0].turns[0].text = "I\u2019m so tired \u2014 it never ends, you know."
    samples[1].turns[0].text = "I feel \u2603\u2603 about it today."
    samples[2].turns = samples[2].turns[1:]
    samples[3].turns[-1].text = "qzx vbn wrtp kkl mnb"
    samples[4].turns[0].text = "Ok."
    out = validate_scripts(samples, ValidationSettings(), s)
    assert out[0].ok and out[0].turns[0].text == "I'm so tired, it never ends, you know."
    assert out[1].dropped_stage == "validation" and "cannot speak" in out[1].dropped_reason
    assert "role 'assistant', expected 'user'" in out[2].dropped_reason
    assert "not English" in out[3].dropped_reason
    assert "1 words" in out[4].dropped_reason


def test_renderer_speaks_turns_and_quarantines_what_the_tts_rejects() -> None:
    s = _settings(num_dialogues=2, max_exchanges=1)
    samples = write_template_scripts(make_scenarios([0, 1], s, 10), s)
    samples[1].scenario.emotion = "bored"  # not an emotion the TTS has a profile for
    out = TurnRenderer(AUDIO)(samples)
    good, bad = out
    assert good.ok and good.sample_rate == AUDIO.sample_rate
    assert set(good.waves) == {0, 1} and all(w.dtype == np.float32 for w in good.waves.values())
    assert good.turns[0].seconds > 0.5
    assert bad.dropped_stage == "render" and "bored" in bad.dropped_reason and not bad.waves
    # Waves survive the Ray row form.
    back = batch_to_samples(samples_to_batch(out))
    assert np.array_equal(back[0].waves[1], good.waves[1]) and back[1].dropped_stage == "render"


def test_filters_quarantine_silence_clipping_and_duration_by_name() -> None:
    sr = AUDIO.sample_rate
    s = _settings(num_dialogues=4, max_exchanges=1)
    samples = make_scenarios(list(range(4)), s, 10)
    t = np.arange(int(1.5 * sr)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    silent = np.zeros_like(tone)
    silent[: sr // 10] = tone[: sr // 10]
    clipped = np.clip(tone * 10, -1, 1).astype(np.float32)
    short = tone[: sr // 10]
    for x, user in zip(samples, [tone, silent, clipped, short], strict=True):
        x.turns = [Turn("user", "hello there my friend"), Turn("assistant", "hello to you too")]
        x.waves = {0: user, 1: tone}
        x.sample_rate = sr
    out = AudioFilter(FilterSettings(), AUDIO)(samples)
    assert out[0].ok and out[0].checks["silence_ratio_max"] < 0.1
    assert out[1].dropped_reason.startswith("silence:")
    assert out[2].dropped_reason.startswith("clipping/invalid:")
    assert out[3].dropped_reason.startswith("duration:")
    assert silence_ratio(silent, sr, -40) > 0.9


def test_a_stage_that_raises_quarantines_its_batch_and_the_job_goes_on() -> None:
    s = _settings(num_dialogues=3)
    samples = make_scenarios([0, 1, 2], s, 10)

    def broken(xs):
        raise RuntimeError("engine crashed")

    out = run_stage("render", broken, samples)
    assert [x.dropped_stage for x in out] == ["render"] * 3
    assert all("engine crashed" in x.dropped_reason for x in out)
    assert all("render" in x.timings for x in out)


@pytest.mark.parametrize("bad_field", ["emotions", "situations"])
def test_scenario_settings_name_the_empty_or_unknown_list(bad_field: str) -> None:
    with pytest.raises(ValueError, match=bad_field if bad_field == "emotions" else "unknown"):
        if bad_field == "emotions":
            _settings(emotions=[])
        else:
            _settings(situations=["nowhere"])


def test_asr_filter_keeps_speech_that_matches_its_script_and_drops_speech_that_does_not() -> None:
    s = _settings(num_dialogues=2, max_exchanges=1)
    samples = write_template_scripts(make_scenarios([0, 1], s, 10), s)
    for x in samples:
        x.scenario.emotion, x.scenario.intensity = "neutral", 0.5
    samples = TurnRenderer(AUDIO)(samples)
    samples[1].turns[1].text = "Purple elephants juggle seventeen violins beneath frozen lakes."
    out = AudioFilter(FilterSettings(max_wer=0.75), AUDIO)(samples)
    assert out[0].ok, out[0].dropped_reason  # espeak + whisper tiny: ~10-20 % WER
    assert 0 <= out[0].checks["wer_max"] <= 0.75
    assert out[1].dropped_stage == "filters" and out[1].dropped_reason.startswith("asr_wer:")


def test_resuming_with_other_content_settings_is_refused_naming_them(tmp_path) -> None:
    from opens2s.config import load_config
    from opens2s.data.pipeline import check_build_config

    root = str(tmp_path / "corpus")
    check_build_config(root, load_config(None))
    # One committed shard: the settings it was built with now bind the corpus.
    storage.write_text(storage.join(root, output.SHARDS_DIR, "shard-00000.jsonl"), "")
    check_build_config(root, load_config(None, {"audio.vad_silence_ms": 900, "data.workers": 5}))
    with pytest.raises(ValueError, match=r"audio.codebook_size, scenarios.seed differ"):
        check_build_config(
            root, load_config(None, {"audio.codebook_size": 512, "data.scenarios.seed": 3})
        )


def test_a_failed_first_runs_settings_do_not_refuse_the_corrected_rerun(tmp_path) -> None:
    from opens2s.config import load_config
    from opens2s.data.pipeline import check_build_config

    root = str(tmp_path / "corpus")
    check_build_config(root, load_config(None, {"data.filters.max_turn_seconds": 0.6}))
    stale_tokenizer = storage.join(root, output.UNIT_TOKENIZER)
    storage.write_bytes(stale_tokenizer, b"fitted under the failed run's settings")
    # The first run committed no shard: the corrected config replaces its settings, and the
    # unit tokenizer fitted under them is refitted.
    fixed = load_config(None, {"data.filters.max_turn_seconds": 20.0})
    check_build_config(root, fixed)
    recorded = json.loads(storage.read_text(storage.join(root, output.BUILD_CONFIG)))
    assert recorded["filters"]["max_turn_seconds"] == 20.0
    assert not storage.exists(stale_tokenizer)
    check_build_config(root, fixed)

"""The realtime protocol, auth and limits, without Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
from opens2s.config import ConfigError, load_config
from opens2s.serving.limits import RateLimiter, token_ok
from opens2s.serving.protocol import (
    InputCommit,
    ProtocolError,
    SessionUpdate,
    audio_delta,
    decode_pcm16,
    parse_client_event,
    pcm16_from_base64,
)

pytestmark = pytest.mark.timeout(60)


def test_session_update_parses_and_bad_messages_name_their_problem() -> None:
    ev = parse_client_event(
        json.dumps({"type": "session.update", "session": {"voice": "a", "temperature": 0.5}}),
        max_bytes=1000,
    )
    assert isinstance(ev, SessionUpdate) and ev.session.temperature == 0.5
    assert isinstance(parse_client_event('{"type": "input.commit"}', max_bytes=100), InputCommit)
    cases = {
        "{not json": "invalid_json",
        "[1, 2]": "invalid_event",
        '{"type": "response.create"}': "unknown_event",
        '{"type": "session.update", "session": {"temperature": -1}}': "invalid_event",
        '{"type": "session.update", "session": {"colour": "red"}}': "invalid_event",
        json.dumps({"type": "input.commit", "pad": "x" * 200}): "message_too_large",
    }
    for text, code in cases.items():
        with pytest.raises(ProtocolError) as e:
            parse_client_event(text, max_bytes=150)
        assert e.value.code == code, text
    with pytest.raises(ProtocolError, match="temperature"):
        parse_client_event('{"type":"session.update","session":{"temperature":-1}}', max_bytes=999)


def test_pcm_frames_must_be_even_and_bounded_and_round_trip_through_base64() -> None:
    wave = np.sin(np.linspace(0, 20, 1600)).astype(np.float32) * 0.5
    pcm = (wave * 32767).astype("<i2").tobytes()
    back = decode_pcm16(pcm, max_bytes=len(pcm))
    assert np.max(np.abs(back - wave)) < 1e-3
    with pytest.raises(ProtocolError) as e:
        decode_pcm16(pcm[:-1], max_bytes=len(pcm))
    assert e.value.code == "not_pcm"
    with pytest.raises(ProtocolError) as e:
        decode_pcm16(pcm, max_bytes=len(pcm) - 2)
    assert e.value.code == "frame_too_large"
    ev = audio_delta("r1", wave, 16000)
    assert ev["samples"] == wave.size and ev["sample_rate"] == 16000
    assert np.max(np.abs(pcm16_from_base64(ev["audio"]) - wave)) < 1e-3


def test_bearer_token_from_header_or_query_and_auth_off_without_token() -> None:
    assert token_ok(None, None, None)
    assert token_ok("s3cret", "Bearer s3cret", None)
    assert token_ok("s3cret", None, "s3cret")
    assert not token_ok("s3cret", None, None)
    assert not token_ok("s3cret", "Bearer wrong", None)
    assert not token_ok("s3cret", "Basic s3cret", None)


def test_rate_limiter_refuses_a_flood_and_recovers() -> None:
    now = [0.0]
    rl = RateLimiter(10, clock=lambda: now[0])
    assert all(rl.allow() for _ in range(20))  # a burst of 2x the rate
    assert not rl.allow()
    now[0] += 1.0
    assert sum(rl.allow() for _ in range(30)) == 10
    audio = RateLimiter(8.0, 30.0, clock=lambda: now[0])  # seconds of audio per second
    assert audio.allow(25.0) and not audio.allow(10.0)
    now[0] += 1.0
    assert audio.allow(10.0)


def test_serve_section_rejects_unknown_keys_and_inverted_replica_bounds() -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_config(None, {"serve.colour": 1})
    with pytest.raises(ConfigError, match="min_replicas"):
        load_config(None, {"serve.autoscaling": {"min_replicas": 3, "max_replicas": 2}})


def _spoken(text: str) -> np.ndarray:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize(text, tts.speakers()[0])
    return resample(wave, sr, 16000)


def test_session_cuts_the_turn_where_vad_hears_silence_and_keeps_a_preroll() -> None:
    from opens2s.audio.vad import build_vad
    from opens2s.serving.session import RealtimeSession

    speech = _spoken("Hello, I would like some help please.")
    lead = np.zeros(16000, np.float32)
    wave = np.concatenate([lead, speech, np.zeros(16000, np.float32), speech[:8000]])
    session = RealtimeSession(vad=build_vad(), max_turn_seconds=30)
    events, turns = [], []
    for i in range(0, wave.size, 320):  # 20 ms frames, as the web page sends
        evs, turn = session.push(wave[i : i + 320])
        events += [e["type"] for e in evs]
        turns += [turn] if turn is not None else []
    assert events[:2] == ["input.speech_started", "input.speech_stopped"]
    assert len(turns) == 1 and turns[0].reason == "vad"
    # the turn holds the whole utterance: not much more, and nothing cut at the start
    assert speech.size * 0.9 < turns[0].audio.size < speech.size + 0.8 * 16000
    energy = np.abs(turns[0].audio)
    assert energy[: int(0.05 * 16000)].max() < 0.01  # begins in the pre-roll silence
    assert session.in_speech  # the trailing speech started a new turn
    commit_events, turn = session.commit()
    assert turn is not None and turn.reason == "commit" and turn.audio.size > 4000
    assert commit_events[0]["reason"] == "commit"


def test_session_ends_a_turn_that_runs_past_the_limit() -> None:
    from opens2s.audio.vad import build_vad
    from opens2s.serving.session import RealtimeSession

    speech = np.concatenate([_spoken("one two three four five six seven eight nine ten")] * 2)
    session = RealtimeSession(vad=build_vad(), max_turn_seconds=1.5)
    reasons = []
    for i in range(0, speech.size, 1600):
        evs, turn = session.push(speech[i : i + 1600])
        if turn is not None:
            reasons.append(turn.reason)
            assert turn.audio.size <= (1.5 + 0.3 + 0.1) * 16000
    assert reasons and reasons[0] == "max_turn"

"""A model directory in the released OpenS2S layout (tests/released_layout.py: units at a
non-zero offset in tts/) is served by real Ray Serve with ``model.checkpoint`` pointing at it,
in the configured dtype, and answered through `opens2s model chat` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port
from opens2s.serving.client import post_speech, wav_bytes
from released_layout import build_released_dir

pytestmark = pytest.mark.timeout(300)

APP = "opens2s-released"
UNITS = 48


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return build_released_dir(tmp_path_factory.mktemp("rel") / "OpenS2S", units=UNITS)


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize("I had a really long day at work today.", tts.speakers()[0])
    return np.concatenate([resample(wave, sr, 16000), np.zeros(8000, np.float32)])


@pytest.fixture(scope="module")
def units_tokenizer(tmp_path_factory) -> Path:
    """A k-means tokenizer with as many units as the released-layout model speaks."""
    from opens2s.config import load_config
    from opens2s.serving.speech_stack import demo_unit_tokenizer

    cfg = load_config(None, {"audio.codebook_size": UNITS})
    return demo_unit_tokenizer(cfg, tmp_path_factory.mktemp("units") / "tokenizer.npz")


def test_serve_answers_from_a_released_layout_directory_in_bfloat16(
    ray_local, released, question, units_tokenizer
):
    from opens2s.config import load_config
    from opens2s.serving.app import build_app
    from ray import serve
    from ray.serve.context import _get_global_client

    cfg = load_config(
        None,
        {
            "model.checkpoint": str(released.path),
            "model.dtype": "bfloat16",
            "audio.codebook_size": UNITS,
            "serve.app_name": APP,
            "serve.unit_tokenizer": str(units_tokenizer),
            "serve.model_num_cpus": 0.25,
            "serve.ingress_num_cpus": 0.1,
        },
    )
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = int(_get_global_client().http_config.port)
    serve.run(build_app(cfg), name=APP, route_prefix="/released")
    try:
        base = f"http://127.0.0.1:{port}/released"
        info = httpx.get(f"{base}/v1/info", timeout=30).json()
        assert "bfloat16" in json.dumps(info) and "OpenS2S" in json.dumps(info), info
        params = {"temperature": 0.0, "unit_temperature": 0.0, "max_units": 60}
        status, reply = post_speech(base, wav_bytes(question, 16000), token=None, params=params)
        assert status == 200, reply
        assert reply.done["status"] == "completed", reply.done
        assert reply.wave.size > 0 and np.isfinite(reply.wave).all()
        # a unit sampling setting outside its range is refused, naming it
        bad = dict(params, unit_top_p=0.0)
        status, text = post_speech(base, wav_bytes(question, 16000), token=None, params=bad)
        assert status == 422 and "unit_top_p" in text
    finally:
        serve.delete(APP)


def test_model_chat_answers_from_a_released_layout_directory(released, question, tmp_path):
    from opens2s.audio.io import write_audio
    from opens2s.cli import app
    from typer.testing import CliRunner

    write_audio(tmp_path / "q.wav", question, 16000)
    out = tmp_path / "answer.wav"
    args = ["model", "chat", "--checkpoint", str(released.path), "--audio", str(tmp_path / "q.wav")]
    args += ["--out", str(out), "--dtype", "bfloat16", "--max-units", "40"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    side = json.loads(out.with_suffix(".units.json").read_text())
    assert side["units"] and all(0 <= u < UNITS for u in side["units"])

"""A released-layout model directory (no k-means tokenizer) served by real Ray Serve with the
opens2s-8b audio section's ``glm4voice_decoder_path`` pointed at a tiny released-format decoder:
the answer's audio streams from the GLM-4-Voice decoder at the API's 16 kHz."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from conftest import free_port
from glm4voice_tiny import write_tiny_decoder
from opens2s.serving.client import post_speech, wav_bytes
from released_layout import build_released_dir

pytestmark = pytest.mark.timeout(300)

APP = "opens2s-glm4voice"
UNITS = 48


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize("I had a really long day at work today.", tts.speakers()[0])
    return np.concatenate([resample(wave, sr, 16000), np.zeros(8000, np.float32)])


def test_serve_streams_the_answer_through_the_glm4voice_decoder(ray_local, tmp_path, question):
    from opens2s.audio.glm4voice_decoder import samples_for
    from opens2s.config import load_config
    from opens2s.serving.app import build_app
    from ray import serve
    from ray.serve.context import _get_global_client

    released = build_released_dir(tmp_path / "OpenS2S", units=UNITS)
    decoder = write_tiny_decoder(tmp_path / "glm-4-voice-decoder")
    cfg = load_config(
        None,
        {
            "model.checkpoint": str(released.path),
            "audio.codebook_size": UNITS,
            "audio.glm4voice_decoder_path": str(decoder),
            "serve.app_name": APP,
            "serve.model_num_cpus": 0.25,
            "serve.ingress_num_cpus": 0.1,
        },
    )
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = int(_get_global_client().http_config.port)
    serve.run(build_app(cfg), name=APP, route_prefix="/glm")
    try:
        base = f"http://127.0.0.1:{port}/glm"
        info = httpx.get(f"{base}/v1/info", timeout=30).json()
        assert info["output_sample_rate"] == 16000, info
        params = {"temperature": 0.0, "unit_temperature": 0.0, "max_units": 40}
        status, reply = post_speech(base, wav_bytes(question, 16000), token=None, params=params)
        assert status == 200, reply
        assert reply.done["status"] == "completed", reply.done
        assert reply.sample_rate == 16000
        assert reply.wave.size > 0 and np.isfinite(reply.wave).all()
        n_units = reply.done["units"]
        assert n_units > 0  # the GLM-4-Voice decoder's length for that many units, at 16 kHz
        assert abs(reply.wave.size - samples_for(n_units) * 16000 / 22050) <= 2
    finally:
        serve.delete(APP)

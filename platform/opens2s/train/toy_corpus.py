"""A small synthetic OpenS2S corpus for training tests, benchmarks and drills.

Offline and instant: user turns are synthesised tones with a random pitch glide (not speech),
assistant turns have random text from a few words and learnable unit patterns, and two records
are broken on purpose (missing audio file, malformed units) so the skip-by-reason path runs. For
a real corpus use ``opens2s corpus build``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def write_toy_corpus(
    root: Path, n_good: int = 16, seed: int = 0, spk_dim: int = 256
) -> dict[str, int]:
    """A small OpenS2S corpus for training tests: synthesised user audio (tones with a random
    pitch glide), assistant text with random-but-learnable units and ``spk_dim``-d speaker
    embeddings (the model's ``spk_emb_dim``), plus two bad records (missing audio, malformed
    units). Returns the expected skip counts by error type."""
    rng = np.random.default_rng(seed)
    words = ["I", "hear", "you", "that", "sounds", "hard", "we", "can", "try", "again", "today"]
    sr = 16000
    (root / "shards").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_good):
        rid = f"rec-{i:04d}"
        seconds = float(rng.uniform(0.8, 1.4))
        t = np.arange(int(seconds * sr)) / sr
        f0 = rng.uniform(120, 260)
        wave = 0.3 * np.sin(2 * np.pi * (f0 + 40 * t) * t) * np.hanning(t.size)
        audio = f"audio/{rid}/user.flac"
        (root / audio).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / audio, wave.astype(np.float32), sr, subtype="PCM_16")
        text = " ".join(rng.choice(words, size=int(rng.integers(4, 8))))
        start = int(rng.integers(0, 16))
        units = "".join(f"<|audio_{start + (k % 8)}|>" for k in range(int(rng.integers(10, 20))))
        spk = [float(x) for x in rng.normal(0, 0.1, spk_dim).round(4)]
        lines.append(
            {
                "id": rid,
                "messages": [
                    {"role": "user", "content": [{"text": "", "audio": audio}]},
                    {
                        "role": "assistant",
                        "content": [{"text": text, "speech_units": units, "spk_emb": spk}],
                    },
                ],
            }
        )
    lines.insert(
        3,
        {
            "id": "bad-missing-audio",
            "messages": [
                {"role": "user", "content": [{"audio": "audio/nowhere.flac"}]},
                {"role": "assistant", "content": [{"text": "hi", "speech_units": "<|audio_1|>"}]},
            ],
        },
    )
    lines.insert(
        7,
        {
            "id": "bad-units",
            "messages": [
                {"role": "user", "content": [{"text": "hello"}]},
                {"role": "assistant", "content": [{"text": "hi", "speech_units": "<|audio_x|>"}]},
            ],
        },
    )
    half = len(lines) // 2
    for k, chunk in enumerate([lines[:half], lines[half:]]):
        text = "".join(json.dumps(r) + "\n" for r in chunk)
        (root / "shards" / f"shard-{k:05d}.jsonl").write_text(text)
    return {"MissingAudioError": 1, "BadUnitsError": 1}

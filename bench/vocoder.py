"""GLM-4-Voice decoder (flow + HiFT): real-time factor and time to first audio, streamed vs offline.

Writes a random-init decoder directory in the released file format (tiny: the tests' sizes;
released: the sizes of THUDM/glm-4-voice-decoder's config.yaml), decodes ``--units`` random
units offline (one call) and streamed (units pushed one at a time, as the speech LM emits them,
with no LM time in between), and reports medians over ``--repeats``. Time to first audio is
compute only: from the first unit to the first samples out (offline: the whole decode).
Prints one JSON object on its last line.

    .venv/bin/python bench/vocoder.py                                   # tiny, CPU, ~30 s
    .venv/bin/python bench/vocoder.py --size released --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np
import torch
import yaml
from opens2s.audio.features import SpeechMelSpec, speech_mel
from opens2s.audio.glm4voice_decoder import GLM4VoiceDecoder, flow_config, hift_config
from opens2s.audio.glm4voice_flow import MaskedDiffWithXvec
from opens2s.audio.glm4voice_hift import HiFTGenerator

# the fields of THUDM/glm-4-voice-decoder's config.yaml that set sizes (docs/speech.md)
RELEASED = {
    "sample_rate": 22050,
    "flow": {
        "input_size": 512,
        "output_size": 80,
        "spk_embed_dim": 192,
        "vocab_size": 16384,
        "input_frame_rate": 12.5,
        "encoder": {
            "output_size": 512,
            "attention_heads": 8,
            "linear_units": 2048,
            "num_blocks": 6,
            "input_layer": "linear",
            "block_size": 10,
            "input_size": 512,
            "use_cnn_module": False,
            "macaron_style": False,
        },
        "length_regulator": {"channels": 80, "sampling_ratios": [1, 1, 1, 1]},
        "decoder": {
            "in_channels": 240,
            "cfm_params": {"content": {"t_scheduler": "cosine", "inference_cfg_rate": 0.7}},
            "estimator": {
                "in_channels": 320,
                "out_channels": 80,
                "channels": [256, 256],
                "attention_head_dim": 64,
                "n_blocks": 4,
                "num_mid_blocks": 12,
                "num_heads": 8,
            },
        },
    },
    "hift": {"in_channels": 80, "base_channels": 512, "f0_predictor": {"cond_channels": 512}},
}


def write_decoder(path: Path, size: str) -> Path:
    if size == "tiny":
        from glm4voice_tiny import write_tiny_decoder

        return write_tiny_decoder(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(RELEASED))
    torch.manual_seed(0)
    torch.save(MaskedDiffWithXvec(flow_config(RELEASED)).state_dict(), path / "flow.pt")
    torch.save(HiFTGenerator(hift_config(RELEASED)).state_dict(), path / "hift.pt")
    return path


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_offline(dec: GLM4VoiceDecoder, units: list[int]) -> tuple[float, np.ndarray]:
    _sync(dec.device)
    t0 = time.perf_counter()
    wave = dec.decode(units)
    _sync(dec.device)
    return time.perf_counter() - t0, wave


def run_stream(dec: GLM4VoiceDecoder, units: list[int]) -> tuple[float, float, np.ndarray]:
    s = dec.stream()
    parts, first = [], None
    _sync(dec.device)
    t0 = time.perf_counter()
    for u in units:
        out = s.push([u])
        if out.size and first is None:
            _sync(dec.device)
            first = time.perf_counter() - t0
        parts.append(out)
    parts.append(s.flush())
    _sync(dec.device)
    total = time.perf_counter() - t0
    return (first if first is not None else total), total, np.concatenate(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "released"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--units", type=int, default=125, help="units to decode (12.5 per second)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory(prefix="glm4voice-bench-") as tmp:
        path = write_decoder(Path(tmp) / "glm-4-voice-decoder", args.size)
        dec = GLM4VoiceDecoder(
            path, sample_rate=16000, device=args.device, dtype=getattr(torch, args.dtype)
        )
    units = np.random.default_rng(0).integers(0, 16384, args.units).tolist()
    run_offline(dec, units[:20])  # warm-up
    run_stream(dec, units[:20])
    off, ttfa, strm = [], [], []
    for _ in range(args.repeats):
        t, offline = run_offline(dec, units)
        off.append(t)
        first, total, streamed = run_stream(dec, units)
        ttfa.append(first)
        strm.append(total)
    audio_s = offline.size / dec.sample_rate
    spec = SpeechMelSpec()
    diff = float(np.abs(speech_mel(offline, spec) - speech_mel(streamed, spec)).mean())
    med = statistics.median
    result = {
        "size": args.size,
        "device": args.device
        if not args.device.startswith("cuda")
        else torch.cuda.get_device_name(),
        "dtype": args.dtype,
        "units": args.units,
        "audio_s": round(audio_s, 3),
        "offline_rtf": round(med(off) / audio_s, 4),
        "stream_rtf": round(med(strm) / audio_s, 4),
        "offline_ttfa_ms": round(med(off) * 1000, 1),
        "stream_ttfa_ms": round(med(ttfa) * 1000, 1),
        "ttfa_ratio": round(med(ttfa) / med(off), 4),
        "first_block_units": dec.block_schedule[0],
        "block_schedule": list(dec.block_schedule),
        "stream_vs_offline_logmel_diff": round(diff, 4),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Compare our CosyVoice2 LM and frontend features with upstream's on the same weights and audio
(a developer check, not a test: it needs source trees of FunAudioLLM/CosyVoice and Matcha-TTS,
which the project never imports, and a scratch environment with openai-whisper, librosa and
torchaudio's ``compliance/kaldi.py``).

    python scripts/check_cosyvoice2_llm_against_upstream.py --upstream /path/to/CosyVoice \
        --matcha /path/to/Matcha-TTS [--model DIR] [--seeds 8]

Without ``--model`` it writes the tests' tiny random-init directory (tests/cosyvoice2_tiny.py).
``llm.pt`` is loaded with ``strict=True`` into upstream's ``Qwen2LM`` (its ``Qwen2Encoder`` built
from ``CosyVoice-BlankEN/config.json`` rather than ``from_pretrained``, whose weights ``llm.pt``
replaces anyway) and into ours. Printed, as one JSON object on the last line:

- ``logits_max_abs_diff``: upstream's ``Qwen2Encoder.forward`` + ``llm_decoder`` vs our
  ``Qwen2LM.logits`` on the same ``lm_input`` (instruct2 layout: instruction text, no prompt
  speech; and zero-shot layout: with prompt speech tokens);
- ``sampled_equal``: of the runs of upstream's ``Qwen2LM.inference`` (after ``torch.manual_seed``)
  and our ``generate`` (a ``torch.Generator`` with the same seed), how many gave the same tokens;
- ``fbank_max_abs_diff``: our :func:`kaldi_fbank` vs torchaudio ``compliance.kaldi.fbank``
  (``num_mel_bins=80, dither=0, sample_frequency=16000``), log-energies;
- ``whisper_mel_max_abs_diff``: our :func:`whisper_log_mel` vs openai-whisper
  ``log_mel_spectrogram(n_mels=128)``;
- ``matcha_mel_max_abs_diff``: our :func:`matcha_mel` vs Matcha-TTS ``mel_spectrogram`` with the
  yaml's parameters, log-magnitudes.

Audio: white noise, a harmonic tone and a chirp with silence, 1-7 s. ``import torchaudio`` needs
its C extension built for the installed torch; only ``compliance/kaldi.py`` (pure torch) is
needed, so it is loaded from the installed package's file. Upstream's ``cosyvoice.utils.onnx``
(a training-time speech-token extractor) is replaced by a stand-in.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import site
import subprocess
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _module_from_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchaudio_standin() -> None:
    """An empty ``torchaudio`` for imports whose functions these checks never call."""
    if "torchaudio" not in sys.modules:
        module = types.ModuleType("torchaudio")
        module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = module


def _torchaudio_kaldi():
    """torchaudio's ``compliance/kaldi.py`` without importing torchaudio's C extension."""
    for base in site.getsitepackages():
        path = Path(base) / "torchaudio" / "compliance" / "kaldi.py"
        if path.is_file():
            _torchaudio_standin()
            return _module_from_file("torchaudio_kaldi", path)
    raise SystemExit("torchaudio is not installed in this environment (pip install --no-deps)")


def _upstream_lm(upstream: Path, model_dir: Path, cfg: dict):
    sys.path.insert(0, str(upstream))
    _torchaudio_standin()
    onnx = types.ModuleType("cosyvoice.utils.onnx")
    onnx.SpeechTokenExtractor, onnx.online_feature, onnx.onnx_path = None, False, ""
    sys.modules["cosyvoice.utils.onnx"] = onnx
    from cosyvoice.llm.llm import Qwen2Encoder, Qwen2LM
    from cosyvoice.utils.common import ras_sampling
    from transformers import Qwen2Config, Qwen2ForCausalLM

    encoder = Qwen2Encoder.__new__(Qwen2Encoder)
    torch.nn.Module.__init__(encoder)
    blank = model_dir / "CosyVoice-BlankEN"
    encoder.model = Qwen2ForCausalLM(Qwen2Config.from_pretrained(str(blank)))
    llm, s = cfg["llm"], cfg["llm"]["sampling"]
    lm = Qwen2LM(
        llm["llm_input_size"],
        llm["llm_output_size"],
        llm["speech_token_size"],
        encoder,
        partial(
            ras_sampling,
            top_p=s["top_p"],
            top_k=s["top_k"],
            win_size=s["win_size"],
            tau_r=s["tau_r"],
        ),
    )
    lm.load_state_dict(torch.load(model_dir / "llm.pt", weights_only=True), strict=True)
    return lm.eval()


def _emit_upstream(upstream: Path, request: Path, answer: Path) -> None:
    """Upstream's logits and sampled tokens for each case of ``request`` (run in the interpreter
    that has upstream's pinned transformers)."""
    req = torch.load(request, weights_only=True)
    lm = _upstream_lm(upstream, Path(req["model_dir"]), {"llm": req["llm"]})
    out = []
    instruction = torch.tensor([req["instruction"]])
    for case in req["cases"]:
        x = case["x"]
        with torch.inference_mode():
            hidden, _ = lm.llm(x, torch.tensor([x.shape[1]]))
            logits = lm.llm_decoder(hidden)
        tokens = []
        for seed in range(req["seeds"]):
            torch.manual_seed(seed)
            gen = lm.inference(
                text=torch.tensor([case["ids"]]),
                text_len=torch.tensor([len(case["ids"])], dtype=torch.int32),
                prompt_text=instruction,
                prompt_text_len=torch.tensor([instruction.shape[1]], dtype=torch.int32),
                prompt_speech_token=torch.tensor(case["prompt"], dtype=torch.long).reshape(1, -1),
                prompt_speech_token_len=torch.tensor([len(case["prompt"])], dtype=torch.int32),
                embedding=torch.zeros(0, 192),
            )
            tokens.append([int(t) for t in gen])
        out.append({"logits": logits, "tokens": tokens})
    import transformers

    torch.save({"cases": out, "transformers": transformers.__version__}, answer)


def _waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    tone = sum(0.2 / k * np.sin(2 * np.pi * 130 * k * t) for k in range(1, 8))
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 400 * t) * t)
    chirp[:8000] = 0.0
    return [
        (0.1 * rng.standard_normal(16000)).astype(np.float32),
        tone.astype(np.float32),
        np.concatenate([chirp, 0.05 * rng.standard_normal(4 * 16000)]).astype(np.float32),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="FunAudioLLM/CosyVoice checkout")
    ap.add_argument("--matcha", type=Path, help="Matcha-TTS checkout")
    ap.add_argument("--model", type=Path, help="a CosyVoice2 directory (default: the tiny one)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument(
        "--upstream-python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter with upstream's pinned transformers (4.51.3) for its Qwen2LM",
    )
    ap.add_argument("--emit-upstream", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.emit_upstream:
        _emit_upstream(args.upstream, *args.emit_upstream)
        return

    sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "tests")]
    from opens2s.audio.cosyvoice2_frontend import (
        CosyVoice2Frontend,
        kaldi_fbank,
        matcha_mel,
        mel_config,
        whisper_log_mel,
    )
    from opens2s.audio.cosyvoice2_llm import load_lm
    from opens2s.audio.glm4voice_decoder import read_config

    model_dir = args.model
    if model_dir is None:
        from cosyvoice2_tiny import write_tiny_cosyvoice2

        model_dir = write_tiny_cosyvoice2(Path(tempfile.mkdtemp(prefix="cosyvoice2-llm-check-")))
    cfg = read_config(model_dir / "cosyvoice2.yaml")
    ours = load_lm(model_dir, cfg)
    frontend = CosyVoice2Frontend(model_dir, mel_config(cfg))

    texts = [
        "Hello world, this is a small test of speech.",
        "The quick brown fox jumps over the lazy dog!",
    ]
    instruction = frontend.text_ids("Speak sadly, slowly and softly.<|endofprompt|>")
    prompt_speech = frontend.speech_tokens(_waves()[1][:32000])
    cases = []
    for text in texts:
        ids = frontend.text_ids(text)
        for prompt_tokens in ([], prompt_speech):  # instruct2, then zero-shot layout
            x = ours.lm_input(ids, instruction, prompt_tokens)
            tokens = [
                ours.generate(
                    ids, instruction, prompt_tokens, generator=torch.Generator().manual_seed(seed)
                )
                for seed in range(args.seeds)
            ]
            cases.append(
                {
                    "ids": ids,
                    "prompt": prompt_tokens,
                    "x": x,
                    "logits": ours.logits(x),
                    "tokens": tokens,
                }
            )
    with tempfile.TemporaryDirectory() as tmp:
        request, answer = Path(tmp) / "request.pt", Path(tmp) / "answer.pt"
        torch.save(
            {
                "model_dir": str(model_dir),
                "llm": cfg["llm"],
                "instruction": instruction,
                "seeds": args.seeds,
                "cases": [{k: c[k] for k in ("ids", "prompt", "x")} for c in cases],
            },
            request,
        )
        subprocess.run(
            [
                str(args.upstream_python),
                __file__,
                "--upstream",
                str(args.upstream),
                "--emit-upstream",
                str(request),
                str(answer),
            ],
            check=True,
        )
        answered = torch.load(answer, weights_only=True)
    theirs = answered["cases"]
    logits_diff = max(
        float((t["logits"] - c["logits"]).abs().max()) for t, c in zip(theirs, cases, strict=True)
    )
    runs = sum(len(c["tokens"]) for c in cases)
    equal = sum(
        int(a == b)
        for t, c in zip(theirs, cases, strict=True)
        for a, b in zip(t["tokens"], c["tokens"], strict=True)
    )

    kaldi = _torchaudio_kaldi()
    import whisper

    matcha = _module_from_file("matcha_audio", args.matcha / "matcha" / "utils" / "audio.py")
    mel = mel_config(cfg)
    fbank_diff = whisper_diff = matcha_diff = 0.0
    for wave in _waves():
        w = torch.from_numpy(wave)
        ref = kaldi.fbank(w[None], num_mel_bins=80, dither=0, sample_frequency=16000)
        fbank_diff = max(fbank_diff, float((ref - kaldi_fbank(wave)).abs().max()))
        ref = whisper.log_mel_spectrogram(w, n_mels=128)
        whisper_diff = max(whisper_diff, float((ref - whisper_log_mel(wave)).abs().max()))
        w24 = torch.from_numpy(
            np.interp(np.arange(wave.size * 3 // 2) / 1.5, np.arange(wave.size), wave).astype(
                np.float32
            )
        )
        ref = matcha.mel_spectrogram(
            w24[None],
            mel.n_fft,
            mel.num_mels,
            mel.sampling_rate,
            mel.hop_size,
            mel.win_size,
            mel.fmin,
            mel.fmax,
            center=False,
        )[0]
        matcha_diff = max(matcha_diff, float((ref - matcha_mel(w24.numpy(), mel)).abs().max()))

    print(
        json.dumps(
            {
                "model": str(model_dir),
                "logits_max_abs_diff": logits_diff,
                "sampled_equal": f"{equal}/{runs}",
                "fbank_max_abs_diff": fbank_diff,
                "whisper_mel_max_abs_diff": whisper_diff,
                "matcha_mel_max_abs_diff": matcha_diff,
                "torch": torch.__version__,
                "upstream_transformers": answered["transformers"],
            }
        )
    )


if __name__ == "__main__":
    main()

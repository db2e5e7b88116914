"""Resynthesis intelligibility of the CPU speech-unit stack: espeak -> units -> vocoder -> ASR.

Renders training and held-out sentences in the assistant voice (the voice the corpus tokenizes),
fits k-means unit tokenizers at 25 and 12.5 units/s on the training sentences, resynthesizes the
held-out ones (offline and streamed) and scores every version with whisper tiny.en. Prints one
JSON object on its last line: wer_source, wer_resynth_25hz, wer_resynth_12_5hz (fractions),
wer_resynth_25hz_streamed, vocoder_rtf, stream_rtf, settings and what else was tried.

    .venv/bin/python bench/units.py            # ~20 min on 2 shared, busy cores
    .venv/bin/python bench/units.py --quick    # smaller codebooks, 20 sentences (~6 min)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
from opens2s.audio.asr import Transcriber, corpus_word_error_rate
from opens2s.audio.io import resample
from opens2s.audio.tts import ASSISTANT_SPEAKER, EspeakTTS
from opens2s.audio.units import MelKMeansUnits
from opens2s.audio.vocoder import GriffinLimVocoder

# Held out: never part of the fitting text.
TEST_SENTENCES = [
    "I am really sorry to hear that your interview did not go the way you hoped.",
    "It sounds like you have been carrying a lot on your shoulders this week.",
    "Would you like to tell me more about what happened at the station?",
    "Your sister must have been thrilled when she opened the letter.",
    "Take a slow breath, and let us think about the next small step together.",
    "The garden looks beautiful after the rain, with all the roses in bloom.",
    "Missing the last train home is frustrating, especially after a long shift.",
    "Congratulations on finishing the marathon, that is an amazing achievement.",
    "It is completely normal to feel nervous before moving to a new city.",
    "Maybe you could call your grandmother this evening and ask how she is doing.",
    "I can hear how disappointed you are that the concert was cancelled.",
    "Cooking dinner for your friends sounds like a lovely way to spend Sunday.",
    "Losing a pet is painful, and it is okay to grieve for as long as you need.",
    "The doctor said the results were fine, so you can finally relax a little.",
    "Did the neighbours ever apologise for the noise last weekend?",
    "Learning to play the piano takes patience, but you are making real progress.",
    "That bicycle accident must have given you quite a fright.",
    "Try writing down three things that went well today before you sleep.",
    "Your teacher was wrong to shout at you in front of the whole class.",
    "A warm cup of tea and a quiet evening might be just what you need.",
    "What a wonderful surprise to bump into an old school friend at the airport.",
    "Please remember that asking for help is a sign of strength, not weakness.",
    "The printer broke again right before the deadline, which is so annoying.",
    "I am glad the storm passed without damaging your house.",
]

_OPEN = [
    "I think",
    "It seems",
    "Honestly",
    "You know",
    "Remember",
    "Sometimes",
    "Perhaps",
    "Of course",
    "Right now",
    "Yesterday",
    "Tomorrow morning",
    "Last summer",
    "After work",
    "Every day",
    "Believe me",
    "Listen",
    "Well",
    "At first",
    "In the end",
    "By the way",
]
_SUBJ = [
    "my brother",
    "the manager",
    "our neighbour",
    "your mother",
    "the children",
    "a stranger",
    "the old farmer",
    "her best friend",
    "the nurse",
    "my cousin",
    "the bus driver",
    "his father",
    "the quiet student",
    "the chef",
    "our team",
    "the young pilot",
    "the shop owner",
    "my aunt",
    "the jury",
    "the engineer",
    "a tired traveller",
    "the singer",
    "the gardener",
    "the judge",
]
_VERB = [
    "forgot",
    "fixed",
    "painted",
    "carried",
    "explained",
    "cancelled",
    "celebrated",
    "ignored",
    "described",
    "watched",
    "shared",
    "repaired",
    "questioned",
    "delivered",
    "measured",
    "visited",
    "borrowed",
    "washed",
    "planned",
    "cooked",
    "finished",
    "sold",
    "changed",
    "opened",
]
_OBJ = [
    "the broken window",
    "a big birthday cake",
    "the difficult exam",
    "every single letter",
    "the yellow umbrella",
    "a long journey north",
    "the heavy wooden chair",
    "our small kitchen",
    "the lost keys",
    "a new jazz record",
    "the muddy boots",
    "the fresh bread",
    "a quick sketch",
    "the whole project",
    "an empty bottle",
    "the crowded market",
    "the frozen lake",
    "a thick novel",
    "the vegetable soup",
    "the office party",
    "a silver watch",
    "the garage door",
    "the red kite",
]
_TAIL = [
    "before the sun went down",
    "without saying a word",
    "because nobody else would",
    "and then laughed about it",
    "while it was raining",
    "in the middle of the night",
    "as quickly as possible",
    "even though it was expensive",
    "with great care",
    "for the first time",
    "after a very long week",
    "just to be safe",
    "near the old bridge",
    "during the holidays",
    "which surprised everyone",
    "so we could relax",
    "but nobody noticed",
    "at exactly noon",
]


# Earlier runs of this script on this machine (24 test sentences unless noted; whisper tiny.en;
# +-3 points is noise). Printed with every result so the numbers keep their context.
TRIED = [
    "K=512 both rates, 200 train sentences, 4 passes, centroids only (20 test): source 14.6%, "
    "25/s 32.7% (streamed 28.9%), 12.5/s 61.9%",
    "K=1024 both rates, 300 train sentences, 4 passes: source 15.2%; 25/s centroids 25.6%, "
    "+ learned unit->mel decoder (800 steps) 18.8% (streamed 17.5%); 12.5/s centroids 37.9%, "
    "+ decoder 35.9%",
    "25/s K=2048, 12.5/s K=4096, 600 train sentences, 5 passes, decoder 192x3 1000 steps: source "
    "15.5%; 25/s centroids 23.0%, + decoder 20.4% (streamed 18.1%); 12.5/s centroids 29.4%, "
    "+ decoder 28.8%; vocoder RTF 0.059, stream RTF 0.18",
    "same, 12.5/s only, decoder 256x4 2000 steps: centroids 29.4%, + decoder 24.3%",
    "STACK-NOTES (2 voices, one female): 25/s K=4096 32.3%, K=1024 45.0%; mel->Griffin-Lim without "
    "quantization 7.2% vs source 11.7%: Griffin-Lim is not the bottleneck",
]


def training_sentences(n: int, seed: int = 0) -> list[str]:
    """n varied sentences from phrase lists (none of them is a test sentence)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        o, s, v, ob, t = (rng.choice(x) for x in (_OPEN, _SUBJ, _VERB, _OBJ, _TAIL))
        out.append(f"{o}, {s} {v} {ob} {t}.")
    return out


def render(tts: EspeakTTS, texts: list[str], speaker: str) -> list[np.ndarray]:
    """16 kHz renders of texts in one voice."""
    out = []
    for t in texts:
        w, sr = tts.synthesize(t, speaker)
        out.append(resample(w, sr, 16000))
    return out


def transcribe_all(asr: Transcriber, waves: list[np.ndarray]) -> list[str]:
    """Whisper tiny.en transcripts of 16 kHz waves."""
    return [asr.transcribe(w, 16000) for w in waves]


def stream_decode(voc: GriffinLimVocoder, units: np.ndarray, step: int = 4) -> np.ndarray:
    """Vocode by pushing ``step`` units at a time, as the serving decoder does."""
    s = voc.stream()
    parts = [s.push(units[i : i + step]) for i in range(0, len(units), step)]
    parts.append(s.flush())
    return np.concatenate(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small codebooks, 20 test sentences")
    ap.add_argument("--train-sentences", type=int, default=600)
    ap.add_argument("--k25", type=int, default=2048)
    ap.add_argument("--k12", type=int, default=4096)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--gl-iters", type=int, default=32)
    ap.add_argument(
        "--decoder-steps", type=int, default=2000, help="train a unit->mel decoder (0: no)"
    )
    ap.add_argument("--decoder-hidden", type=int, default=256)
    ap.add_argument("--decoder-layers", type=int, default=4)
    ap.add_argument("--rates", default="25,12.5", help="unit rates to measure, comma-separated")
    ap.add_argument("--speaker", default=ASSISTANT_SPEAKER)
    ap.add_argument("--out", default="artifacts/bench_units", help="where to leave sample wavs")
    args = ap.parse_args()
    if args.quick:
        args.train_sentences, args.k25, args.k12, args.passes = 200, 512, 512, 4
        args.decoder_steps = 300
    tests = TEST_SENTENCES[:20] if args.quick else TEST_SENTENCES
    t_start = time.monotonic()
    tts = EspeakTTS()
    train_w = render(tts, training_sentences(args.train_sentences), args.speaker)
    test_w = render(tts, tests, args.speaker)
    train_s = sum(w.size for w in train_w) / 16000
    test_s = sum(w.size for w in test_w) / 16000
    print(
        f"rendered {len(train_w)} training ({train_s:.0f} s) and {len(test_w)} test ({test_s:.0f} s) utterances",
        flush=True,
    )
    asr = Transcriber()
    result: dict[str, object] = {}
    hyp = transcribe_all(asr, test_w)
    result["wer_source"] = corpus_word_error_rate(tests, hyp)
    print(f"source WER {result['wer_source']:.3f}", flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from opens2s.audio.io import write_audio

    write_audio(out_dir / "source.wav", test_w[0], 16000)
    rates = {float(r) for r in args.rates.split(",")}
    for rate, k, key in ((25.0, args.k25, "25hz"), (12.5, args.k12, "12_5hz")):
        if rate not in rates:
            continue
        t0 = time.monotonic()
        tok = MelKMeansUnits(k, rate).fit(
            train_w, passes=args.passes, progress=lambda m: print(m, flush=True)
        )
        fit_s = time.monotonic() - t0
        units = [tok.encode(w, 16000) for w in test_w]
        if args.decoder_steps:
            voc = GriffinLimVocoder(tok, n_iter=args.gl_iters)
            plain = [voc.decode(u) for u in units]
            result[f"wer_resynth_{key}_centroids"] = corpus_word_error_rate(
                tests, transcribe_all(asr, plain)
            )
            print(
                f"{key}: centroids only WER {result[f'wer_resynth_{key}_centroids']:.3f}",
                flush=True,
            )
            t0 = time.monotonic()
            tok.fit_decoder(
                train_w,
                steps=args.decoder_steps,
                hidden=args.decoder_hidden,
                layers=args.decoder_layers,
                progress=lambda m: print(m, flush=True),
            )
            result[f"decoder_fit_seconds_{key}"] = round(time.monotonic() - t0, 1)
        voc = GriffinLimVocoder(tok, n_iter=args.gl_iters)
        t0 = time.monotonic()
        offline = [voc.decode(u) for u in units]
        dec_s = time.monotonic() - t0
        result[f"wer_resynth_{key}"] = corpus_word_error_rate(tests, transcribe_all(asr, offline))
        result[f"fit_seconds_{key}"] = round(fit_s, 1)
        result[f"codebook_{key}"] = k
        write_audio(out_dir / f"resynth_{key}.wav", offline[0], 16000)
        if key == "25hz":
            result["vocoder_rtf"] = dec_s / test_s
            t0 = time.monotonic()
            streamed = [stream_decode(voc, u) for u in units]
            result["stream_rtf"] = (time.monotonic() - t0) / test_s
            result["wer_resynth_25hz_streamed"] = corpus_word_error_rate(
                tests, transcribe_all(asr, streamed)
            )
            write_audio(out_dir / "resynth_25hz_streamed.wav", streamed[0], 16000)
        print(
            f"{key}: K={k} WER {result[f'wer_resynth_{key}']:.3f} (fit {fit_s:.0f} s)", flush=True
        )
    result.update(
        {
            "test_sentences": len(tests),
            "train_seconds": round(train_s, 1),
            "speaker": args.speaker,
            "asr": "faster-whisper tiny.en (int8), greedy",
            "griffin_lim_iters": args.gl_iters,
            "kmeans_passes": args.passes,
            "unit_decoder_steps": args.decoder_steps,
            "unit_decoder_hidden_layers": [args.decoder_hidden, args.decoder_layers],
            "unit_features": "80-bin log-mel, 10 ms hop, 4 (25/s) or 8 (12.5/s) frames stacked, z-scored",
            "bench_seconds": round(time.monotonic() - t_start, 1),
            "load_average_1min": round(os.getloadavg()[0], 1),
            "tried": TRIED,
        }
    )
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()

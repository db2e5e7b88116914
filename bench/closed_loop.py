"""Benchmark: closed-loop WER of the model the pipeline trains, against training steps.

Builds the embedded default's corpus (jobs/configs/tiny.yaml: 6 dialogues), trains the tiny model
with a checkpoint every ``--every`` steps (all kept), and for each checkpoint asks ``--questions``
corpus questions by speech through what a Serve replica runs (``load_speech_stack``: the exported
model, the streaming decoder, the growing-block vocoder stream; in process, no HTTP), transcribes
each answer with the offline ASR and scores it against the answer trained for that question.
The baseline measured in the same run is the speech-path ceiling: the trained answers' own units,
vocoded and transcribed (what the unit tokenizer, vocoder and ASR lose without any model).

    python bench/closed_loop.py [--steps 600 --every 50 --questions 4]

Prints one JSON object as the last line and writes a PNG of WER against steps.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

GOAL_MEDIAN, GOAL_MAX = 0.25, 0.40


def ask_all(cfg, model_dir: str, dialogues, transcriber) -> list[dict]:
    """Each dialogue's question through the replica's stack; the transcript's WER vs its answer."""
    import numpy as np
    from opens2s.audio.asr import word_error_rate
    from opens2s.audio.io import load_audio
    from opens2s.config.serve import VocoderBlocks
    from opens2s.model.streaming import UnitChunk
    from opens2s.serving.decode_loop import TurnRequest
    from opens2s.serving.speech_stack import load_speech_stack
    from opens2s.storage import read_bytes

    served = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"model_dir": model_dir})})
    stack = load_speech_stack(served)
    vocoder = stack.vocoder_for(VocoderBlocks())
    rows = []
    for d in dialogues:
        wave = load_audio(read_bytes(d.question_audio), sr=16000)
        req = TurnRequest(
            response_id=d.record_id,
            audio=wave,
            sampling={
                "temperature": 0.0,
                "unit_temperature": 0.0,
                "max_text_tokens": cfg.turn.max_text_tokens,
                "max_units": cfg.turn.max_units,
            },
        )
        state = stack.start(req)
        stream, chunks, text = vocoder.stream(), [], ""
        while not state.done:
            for event in stack.step([state])[0]:
                if isinstance(event, UnitChunk):
                    chunks.append(stream.push(event.units))
        chunks.append(stream.flush())
        text = stack.decoder.tokenizer.decode(state.text_tokens, skip_special_tokens=True)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        transcript = transcriber.transcribe(audio, vocoder.sample_rate) if audio.size else ""
        rows.append(
            {
                "record_id": d.record_id,
                "wer_speech": word_error_rate(d.reference_text, transcript),
                "wer_text": word_error_rate(d.reference_text, text),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--run-dir", default=None, help="default: a temporary directory")
    args = p.parse_args()

    import ray
    from opens2s.audio.asr import Transcriber, word_error_rate
    from opens2s.config import load_config
    from opens2s.pipeline.local import start_local_ray
    from opens2s.pipeline.runner import run_steps
    from opens2s.pipeline.spoken_turn import _corpus_vocoder, test_dialogues
    from opens2s.train.export import export_checkpoint

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="opens2s-closed-loop-"))
    n_ckpt = args.steps // args.every + 1
    cfg = load_config(
        ROOT / "jobs/configs/tiny.yaml",
        {
            "run_dir": str(run_dir),
            "train.max_steps": args.steps,
            "train.checkpoint_every": args.every,
            "train.keep_last": n_ckpt,
            "turn.questions": args.questions,
        },
    )
    start_local_ray()
    t0 = time.perf_counter()
    run_steps(cfg, ["units", "corpus", "finetune"], log=lambda m: print(m, flush=True))
    train_s = time.perf_counter() - t0
    corpus = cfg.corpus_uri()
    dialogues = test_dialogues(corpus, args.questions)
    transcriber = Transcriber()

    # Baseline of the same run: the trained answers' own units, vocoded, transcribed.
    vocoder = _corpus_vocoder(corpus, cfg.audio)
    ceiling = [
        word_error_rate(
            d.reference_text,
            transcriber.transcribe(vocoder.decode(d.reference_units), vocoder.sample_rate),
        )
        for d in dialogues
    ]

    ckpts = sorted((run_dir / "train/finetune").glob("checkpoint-*"))
    curve = []
    for ckpt in ckpts:
        step = int(ckpt.name.split("-")[1])
        out = run_dir / "exports" / ckpt.name
        export_checkpoint(str(ckpt), str(out), units_from=corpus)
        rows = ask_all(cfg, str(out), dialogues, transcriber)
        wers = [r["wer_speech"] for r in rows]
        curve.append(
            {
                "step": step,
                "wer_median": round(statistics.median(wers), 4),
                "wer_max": round(max(wers), 4),
                "text_wer_median": round(statistics.median(r["wer_text"] for r in rows), 4),
            }
        )
        print(json.dumps(curve[-1]), flush=True)
    ray.shutdown()

    png = run_dir / "closed_loop_wer.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [c["step"] for c in curve]
    ax.plot(steps, [c["wer_median"] for c in curve], marker=".", label="median WER")
    ax.plot(steps, [c["wer_max"] for c in curve], marker=".", label="max WER")
    ax.axhline(statistics.median(ceiling), color="gray", ls="--", label="speech-path ceiling")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"closed-loop WER ({len(dialogues)} questions)")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)

    reached = next(
        (c["step"] for c in curve if c["wer_median"] <= GOAL_MEDIAN and c["wer_max"] <= GOAL_MAX),
        None,
    )
    last = curve[-1]
    print(
        json.dumps(
            {
                "questions": len(dialogues),
                "steps": args.steps,
                "wer_median_final": last["wer_median"],
                "wer_max_final": last["wer_max"],
                "ceiling_wer_median": round(statistics.median(ceiling), 4),
                "ceiling_wer_max": round(max(ceiling), 4),
                "final_over_ceiling_median": round(
                    last["wer_median"] / max(statistics.median(ceiling), 1e-9), 3
                ),
                "first_step_meeting_goal": reached,
                "goal": {"median": GOAL_MEDIAN, "max": GOAL_MAX},
                "goal_met": last["wer_median"] <= GOAL_MEDIAN and last["wer_max"] <= GOAL_MAX,
                "corpus_and_train_s": round(train_s, 1),
                "curve": curve,
                "png": str(png),
            }
        )
    )


if __name__ == "__main__":
    main()

"""The pipeline's closing summary: each step's status and outputs, the answer and its TTFA."""

from __future__ import annotations

from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import STEPS

_MAIN_OUTPUT = {
    "units": ("tokenizer",),
    "corpus": ("corpus", "summary"),
    "align": ("checkpoint", "loss_plot"),
    "finetune": ("checkpoint", "loss_plot"),
    "export": ("model",),
    "serve": ("url",),
    "turn": ("question", "answer", "result", "reference_vocoded"),
}


def _fmt(value: object, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def format_summary(manifest: RunManifest) -> str:
    """A few lines a person reads at the end of ``make demo``."""
    lines = [f"pipeline run {manifest.run_dir} ({manifest.mode}); manifest {manifest.uri}"]
    for name in STEPS:
        rec = manifest.steps[name]
        took = f" {rec.seconds:.1f} s" if rec.seconds is not None and rec.status == "done" else ""
        line = f"  {name:<9} {rec.status}{took}"
        if rec.error:
            line += f": {rec.error}"
        elif rec.detail.get("reason"):
            line += f" ({rec.detail['reason']})"
        lines.append(line)
        for key in _MAIN_OUTPUT[name]:
            if key in rec.outputs:
                lines.append(f"      {key}: {rec.outputs[key]}")
    corpus = manifest.steps["corpus"].detail
    if corpus:
        lines.append(
            f"corpus: {corpus.get('dialogues_written', '?')} dialogues written, "
            f"{corpus.get('dialogues_quarantined', '?')} quarantined, "
            f"{_fmt(corpus.get('hours'), '.4f')} h of audio"
        )
    for stage in ("align", "finetune"):
        d = manifest.steps[stage].detail
        if d.get("final_loss"):
            lines.append(
                f"{stage}: {d.get('steps')} steps, loss {_fmt(d['first_loss'].get('loss'))} -> "
                f"{_fmt(d['final_loss'].get('loss'))}"
            )
    turn = manifest.steps["turn"].detail
    if turn:
        lines.append(f"question (corpus record {turn.get('record_id')}): answer trained on")
        lines.append(f"  {turn.get('reference_text')!r}")
        lines.append(f"answer text:       {turn.get('answer_text')!r}")
        lines.append(f"answer transcript: {turn.get('transcript')!r}")
        lines.append(
            f"TTFA {_fmt(turn.get('ttfa_ms'), '.0f')} ms (server {_fmt(turn.get('server_ttfa_ms'), '.0f')} ms), "
            f"answer {_fmt(turn.get('answer_seconds'), '.2f')} s of audio"
        )
        if turn.get("wer_speech") is not None:
            lines.append(
                f"closed loop WER (ASR of answer audio vs trained answer): {turn['wer_speech']:.2f}; "
                f"model text vs trained answer: {_fmt(turn.get('wer_text'), '.2f')}; "
                f"ASR vs model text: {_fmt(turn.get('wer_vocoded'), '.2f')}"
            )
        if turn.get("wer_ceiling") is not None:
            lines.append(
                f"speech-path ceiling (the trained answer's own units, vocoded, ASR): WER "
                f"{turn['wer_ceiling']:.2f}: {turn.get('reference_vocoded_transcript')!r}"
            )
        if turn.get("asr_unavailable"):
            lines.append(f"no transcript: {turn['asr_unavailable']}")
    return "\n".join(lines)

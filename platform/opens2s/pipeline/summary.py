"""The pipeline's closing summary: each step's status and outputs, the answer and its TTFA."""

from __future__ import annotations

from opens2s.config.train import STAGE_ORDER
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import STEPS

_MAIN_OUTPUT = {
    "units": ("tokenizer",),
    "corpus": ("corpus", "summary"),
    "continuation": ("corpus", "summary"),
    **{stage: ("checkpoint", "loss_plot") for stage in STAGE_ORDER},
    "export": ("model",),
    "serve": ("url",),
    "turn": ("result", "answers"),
    "eval": ("report", "plot"),
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
    for stage in STAGE_ORDER:
        d = manifest.steps[stage].detail
        if d.get("final_loss"):
            lines.append(
                f"{stage}: {d.get('steps')} steps, loss {_fmt(d['first_loss'].get('loss'))} -> "
                f"{_fmt(d['final_loss'].get('loss'))}"
            )
    turn = manifest.steps["turn"].detail
    if turn:
        lines += _turn_lines(turn)
    ev = manifest.steps["eval"].detail
    if ev.get("summary"):
        from opens2s.evaluation.report import summary_table

        lines.append(f"eval of the exported model on {ev.get('eval_set')} (docs/eval.md):")
        lines += [f"  {line}" for line in summary_table(ev["summary"])]
    model = manifest.steps["export"].outputs.get("model")
    if model and manifest.steps["export"].status in ("done", "skipped"):
        lines.append(
            f"serve the model just trained: opens2s serve --model-dir {model}  (in the venv; "
            "`make serve` does the same for make demo's run)"
        )
    return "\n".join(lines)


def _turn_lines(turn: dict) -> list[str]:
    """The spoken test: one line per question, where to listen, the closed-loop figures."""
    rows = turn.get("questions") or []
    lines = [f"spoken test: {len(rows)} corpus questions by speech (greedy), answers by ASR"]
    for i, r in enumerate(rows, start=1):
        lines.append(
            f"  q{i} [{r.get('emotion') or '?'}] WER {_fmt(r.get('wer_speech'), '.2f')} "
            f"(vs own text {_fmt(r.get('wer_vocoded'), '.2f')}, speech-path ceiling "
            f"{_fmt(r.get('wer_ceiling'), '.2f')}), TTFA {_fmt(r.get('ttfa_ms'), '.0f')} ms: "
            f"{_short(r.get('transcript') or r.get('answer_text'))!r}"
        )
        lines.append(f"      listen: {r.get('answer_wav')}")
    held = turn.get("held_out")
    if held and held.get("error"):
        lines.append(f"  held-out: not asked ({held['error']})")
    elif held:
        how = held.get("rendered_as", {})
        lines.append(
            f"  held-out (q1's words, voice {how.get('speaker')}, {how.get('emotion')}; no goal): "
            f"WER {_fmt(held.get('wer_speech'), '.2f')}: {_short(held.get('transcript'))!r}"
        )
        lines.append(f"      listen: {held.get('answer_wav')}")
    speech, goal = turn.get("wer_speech") or {}, turn.get("goal") or {}
    if speech.get("median") is not None:
        verdict = "met" if goal.get("met") else "missed"
        lines.append(
            f"closed-loop WER (ASR of the answers vs the trained answers): median "
            f"{speech['median']:.2f}, max {speech['max']:.2f} (goal <= {goal.get('median_wer')} / "
            f"<= {goal.get('max_wer')}: {verdict}); distinct answers "
            f"{turn.get('distinct_answer_texts')} of {len(rows)}; TTFA median "
            f"{_fmt((turn.get('ttfa_ms') or {}).get('median'), '.0f')} ms"
        )
    elif turn.get("asr_unavailable"):
        lines.append(f"no transcripts: {turn['asr_unavailable']}")
    return lines


def _short(text: object, n: int = 70) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 3] + "..."

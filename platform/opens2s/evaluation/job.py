"""``opens2s eval``: a Ray Data job that asks a model every spoken question of an eval set and
scores each answer (latency, speech-text consistency, reference match, voice, emotion, empathy).

answer (actors holding the server's speech stack, GPUs where configured) -> score (ASR, speaker
encoder, prosody, SER) -> judge (when ``eval.judge.model_path`` is set); then the driver applies
the prosody rule (it needs every reply's cues), and writes ``<out>/eval.json``,
``items.parquet``, ``distributions.png``, ``report.md`` and ``answers/*.wav``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.evaluation import report, stages
from opens2s.evaluation.eval_set import EvalItem, load_eval_set

Log = Callable[[str], None]
VOICE_SENTENCE = (
    "Thank you for telling me. I am here with you, and we can take this one step at a time."
)


def eval_dir(cfg: PlatformConfig) -> str:
    """Where the pipeline's eval writes: ``<run_dir>/eval``."""
    return storage.join(cfg.run_dir, "eval")


def voice_embedding(
    cfg: PlatformConfig, model_dir: str, eval_set: str
) -> tuple[np.ndarray | None, str]:
    """The requested voice's speaker embedding and where it came from: the model dir's
    ``speakers/<voice>.npy``, else the corpus's ``spk/assistant.npy`` (a corpus eval set), else
    the TTS's ``audio.assistant_speaker`` voice reading a fixed sentence."""
    from opens2s.data import output

    voice = cfg.eval.voice or cfg.audio.assistant_speaker
    candidates = [storage.join(model_dir, "speakers", f"{voice}.npy")]
    if not eval_set.endswith(".jsonl") and voice == cfg.audio.assistant_speaker:
        candidates.append(storage.join(eval_set, output.ASSISTANT_EMBEDDING))
    for uri in candidates:
        if storage.exists(uri):
            import io

            return np.load(io.BytesIO(storage.read_bytes(uri))).astype(np.float32), uri
    if cfg.eval.voice:
        raise ValueError(
            f"eval.voice {voice!r}: no speakers/{voice}.npy in {model_dir} to compare answers with"
        )
    try:
        from opens2s.audio.speaker import SpeakerEncoder
        from opens2s.audio.tts import build_tts

        wave, sr = build_tts(cfg.audio).synthesize(VOICE_SENTENCE, voice)
        emb = SpeakerEncoder(cfg.audio.speaker_encoder).embed(wave, sr)
        return emb, f"{cfg.audio.tts_engine} voice {voice!r} reading a fixed sentence"
    except Exception as e:  # no TTS voice either: the score is absent, and the report says why
        return None, f"none ({type(e).__name__}: {e})"


def _apply_emotion_rules(rows: list[dict[str, Any]]) -> str:
    """Prosody rule and SER match for every scored row; returns the baseline's source."""
    from opens2s.evaluation.emotion import expected_tone, neutral_baseline, prosody_score

    scored = [r for r in rows if r.get("status") == "scored"]
    base, source = neutral_baseline(scored)
    for r in scored:
        r.update(prosody_score(r, base))
        if r.get("ser_label") and r.get("emotion"):
            r["ser_match"] = r["ser_label"] == expected_tone(r["emotion"])
    return source


def run_eval(
    cfg: PlatformConfig,
    model_dir: str,
    out_dir: str,
    eval_set: str | None = None,
    log: Log = print,
    table: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` (exported or released) on ``eval_set`` (default ``eval.eval_set``,
    else this run's corpus); returns the ``eval.json`` dict. ``table``: log the summary table
    (the pipeline prints it in its closing summary instead)."""
    import ray
    import ray.data

    e = cfg.eval
    if cfg.model.device.startswith("cuda") and not e.gpus_per_worker:
        raise ValueError(
            f"model.device is {cfg.model.device} but eval.gpus_per_worker is 0: the answering "
            "actors would see no GPU; set eval.gpus_per_worker (e.g. 1)"
        )
    t0 = time.perf_counter()
    spec = eval_set or e.eval_set or cfg.corpus_uri()
    items = load_eval_set(spec, e.train_questions, e.max_items)
    if not storage.exists(storage.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir} holds no config.json: not a model directory")
    emb, voice_source = voice_embedding(cfg, model_dir, spec)
    log(
        f"[eval] {len(items)} items from {spec} "
        f"({', '.join(f'{k} {v}' for k, v in _count(items).items())}); model {model_dir}"
    )
    rows_bad = [_failed_item(i) for i in items if i.error]
    good = [i for i in items if not i.error]
    rows: list[dict[str, Any]] = list(rows_bad)
    if good:
        if not ray.is_initialized():
            ray.init()  # RAY_ADDRESS's cluster, else a local one
        conf = cfg.model_dump(mode="json")
        ds = ray.data.from_items(
            [{"row": json.dumps(i.as_dict()), "audio": b""} for i in good],
            override_num_blocks=max(1, -(-len(good) // e.batch_size)),
        )
        ds = ds.map_batches(
            stages.AnswerStage,
            fn_constructor_kwargs={
                "platform_config": conf,
                "model_dir": model_dir,
                "out_dir": out_dir,
            },
            batch_size=e.batch_size,
            compute=ray.data.ActorPoolStrategy(size=e.workers),
            num_cpus=e.cpus_per_worker,
            num_gpus=e.gpus_per_worker or None,
        )
        ds = ds.map_batches(
            stages.ScoreStage,
            fn_constructor_kwargs={
                "platform_config": conf,
                "voice_embedding": None if emb is None else emb.tolist(),
            },
            batch_size=e.batch_size,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
        )
        if e.judge.model_path:
            ds = ds.map_batches(
                stages.JudgeStage,
                fn_constructor_kwargs={"platform_config": conf},
                batch_size=e.judge.batch_size,
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=1,
                num_gpus=e.judge.gpus or None,
            )
        got = {
            json.loads(r["row"])["item_id"]: json.loads(r["row"]) for r in ds.take_all()
        }  # Ray Data does not keep row order: key by id
        for i in good:
            row = got.get(i.item_id)
            if row is None:  # a block lost with its worker: reported, not dropped
                row = _failed_item(i, "job: the row never came back from its Ray worker")
            rows.append(row)
    order = {i.item_id: n for n, i in enumerate(items)}
    rows.sort(key=lambda r: order.get(r["item_id"], len(order)))
    baseline = _apply_emotion_rules(rows)
    summary = report.summarize(rows)
    result = {
        "model_dir": model_dir,
        "eval_set": spec,
        "batch_size": e.batch_size,
        "voice_source": voice_source,
        "prosody_baseline_source": baseline,
        "judge": e.judge.model_path and f"{e.judge.backend}: {e.judge.model_path}",
        "ser": e.ser_model_path,
        "seconds": round(time.perf_counter() - t0, 2),
        "summary": summary,
        "failed_items": [
            {"item_id": r["item_id"], "error": r.get("error")}
            for r in rows
            if r.get("status") == "failed"
        ],
        "items_uri": report.write_items(rows, storage.join(out_dir, report.ITEMS_PARQUET)),
        "plot_uri": report.plot_distributions(rows, storage.join(out_dir, report.PLOT)),
        "answers_uri": storage.join(out_dir, "answers"),
        "report_uri": storage.join(out_dir, report.REPORT),
    }
    storage.write_text(result["report_uri"], report.markdown_report(result))
    storage.write_text(storage.join(out_dir, report.EVAL_JSON), json.dumps(result, indent=2) + "\n")
    for line in report.summary_table(summary) if table else []:
        log(f"[eval] {line}")
    log(f"[eval] {result['seconds']:.1f} s; report {result['report_uri']}")
    return result


def _count(items: list[EvalItem]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i.split] = out.get(i.split, 0) + 1
    return out


def _failed_item(item: EvalItem, error: str | None = None) -> dict[str, Any]:
    return {**item.as_dict(), "status": "failed", "error": error or f"eval set: {item.error}"}

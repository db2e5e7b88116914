"""Corpus construction as a Ray Data job: the stages composed, run shard-resumably, summarised.

The pipeline is an ordered list of :class:`StageSpec` (a typed config + a batch function, as in
``ray.data.llm``'s processors): scenarios -> writer -> validation -> render -> units -> filters ->
audio output. Ray Data maps them over batches of samples, streaming, on actor pools of
``data.workers`` actors: consecutive light stages run as one chain in one pool, a stage that
holds a model (an LLM, ASR, a GPU TTS) has a pool of its own. The driver gathers finished samples
per shard and commits a shard as soon as all of its samples are back (``output.write_shard``).

Resumption: a shard whose records exist is skipped; anything else is redone with the same ids and
paths, so a run killed at any point and started again ends with every sample exactly once, either
in a shard or in the quarantine. A Ray Data block that fails outright (a worker crash) is allowed
up to ``data.max_failed_blocks``; its samples are quarantined as lost.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.data import output, scenarios, summary
from opens2s.data.filters import AudioFilter
from opens2s.data.render import TurnRenderer
from opens2s.data.sample import Sample, batch_to_samples, sample_id, samples_to_batch
from opens2s.data.speech_units import (
    AssistantUnitEncoder,
    embed_assistant_voice,
    fit_unit_tokenizer,
)
from opens2s.data.validation import validate_scripts
from opens2s.data.writer_template import write_template_scripts

Log = Callable[[str], None]


@dataclass(frozen=True)
class StageSpec:
    """One corpus stage: ``fn`` is a batch function ``fn(samples, **kwargs) -> samples`` or a class
    built with ``kwargs`` whose instances are called on batches. Ray Data runs it over batches of
    ``batch_size`` samples in actor pools: consecutive light stages share one pool (one chain,
    see :func:`_chains`), a stage that ``holds_model`` (an LLM, a GPU TTS, ASR) has its own."""

    name: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 4
    holds_model: bool = False
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def run_stage(name: str, fn: Callable[[list[Sample]], list[Sample]], samples: list[Sample]):
    """Apply one stage to samples, timing it; if the stage itself raises, its whole batch is
    quarantined with the error (the job goes on)."""
    start = time.perf_counter()
    try:
        out = fn(samples)
        if len(out) != len(samples):
            raise RuntimeError(f"stage returned {len(out)} samples for {len(samples)}")
        samples = out
    except Exception as e:
        for s in samples:
            s.drop(name, f"stage failed on its batch: {type(e).__name__}: {e}")
    share = (time.perf_counter() - start) / max(1, len(samples))
    for s in samples:
        s.timings[name] = round(s.timings.get(name, 0.0) + share, 6)
    return samples


class StageChainWorker:
    """A Ray Data actor that runs a chain of stages on each batch, one after the other.

    Stage objects (an espeak engine, a k-means codebook, an LLM) are built once, in the actor.
    A chain is either consecutive light stages or one stage that holds a model (see
    :func:`_chains`); ``data.workers`` actors each run the whole chain, so a batch's samples
    cross the object store once per chain, not once per stage, and each actor keeps a few
    batches queued (no idle gap between batches)."""

    def __init__(self, specs: list[StageSpec], scenario: ScenarioStep | None = None) -> None:
        self.scenario = scenario
        self.stages = [(spec.name, _build(spec)) for spec in specs]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.scenario is not None:
            samples = self.scenario(batch)
        else:
            samples = batch_to_samples(batch)
        for name, fn in self.stages:
            samples = run_stage(name, fn, samples)
        return samples_to_batch(samples)


def _build(spec: StageSpec) -> Callable[[list[Sample]], list[Sample]]:
    if isinstance(spec.fn, type):
        return spec.fn(**spec.kwargs)
    return lambda xs: spec.fn(xs, **spec.kwargs)


@dataclass(frozen=True)
class ScenarioStep:
    """Rows of sample indices -> scenario samples (the first step of the first chain)."""

    settings: Any
    shard_size: int

    def __call__(self, batch: dict[str, Any]) -> list[Sample]:
        start = time.perf_counter()
        samples = scenarios.make_scenarios(
            [int(i) for i in batch["index"]], self.settings, self.shard_size
        )
        share = (time.perf_counter() - start) / max(1, len(samples))
        for s in samples:
            s.timings[scenarios.STAGE] = round(share, 6)
        return samples


def _scenario_task(batch: dict[str, Any], scenario: ScenarioStep) -> dict[str, Any]:
    return samples_to_batch(scenario(batch))


def _chains(stages: Iterable[StageSpec]) -> list[list[StageSpec]]:
    """Stages grouped: runs of consecutive light stages form one chain; a stage that holds a model
    (an LLM, ASR), needs a GPU or is itself a Ray Data processor stands alone."""
    groups: list[list[StageSpec]] = []
    for spec in stages:
        if _alone(spec) or not groups or _alone(groups[-1][0]):
            groups.append([spec])
        else:
            groups[-1].append(spec)
    return groups


def _alone(spec: StageSpec) -> bool:
    return bool(spec.holds_model or spec.num_gpus or getattr(spec.fn, "applies_to_dataset", False))


IN_FLIGHT_PER_ACTOR = 4
"""Blocks an actor holds at once (one running, the rest queued): with one, each actor idled
between blocks while the next was dispatched and 2 workers ran only ~1.16x one; with 2, 1.76x;
with 4 (Ray Data's default), 1.83x (bench/corpus.py, medians of 3). A queued block dies with a
crashing neighbour; the salvage pass (:func:`salvage_samples`) reruns such blocks' samples one
by one, so a crash still loses only the sample that causes it."""


def apply_stages(
    ds,
    stages: Iterable[StageSpec],
    workers: int,
    cpus_per_worker: float,
    worker_retries: int,
    scenario: ScenarioStep | None = None,
    *,
    isolate: bool = False,
):
    """Compose stages on a Ray Dataset of sample rows (the pipeline is only this composition).

    With ``scenario``, ``ds`` holds sample indices and the first chain makes the scenarios. Each
    chain (see :func:`_chains`) runs on an actor pool of ``workers`` actors, each asking for
    ``num_cpus * cpus_per_worker`` logical CPUs (and the stage's GPUs). ``isolate`` runs one
    sample per batch and one batch per actor at a time (the salvage pass)."""
    import ray.data

    in_flight = 1 if isolate else IN_FLIGHT_PER_ACTOR

    for chain in _chains(stages):
        head = chain[0]
        if getattr(head.fn, "applies_to_dataset", False):
            if scenario is not None:  # scenarios first, in tasks (microseconds a sample)
                ds = ds.map_batches(
                    _scenario_task, fn_kwargs={"scenario": scenario}, batch_format="numpy"
                )
                scenario = None
            # a stage that applies itself to the Dataset (its own actor pool)
            ds = head.fn(ds, head, workers, worker_retries=worker_retries)
            continue
        extra = {"num_gpus": head.num_gpus} if head.num_gpus else {}
        ds = ds.map_batches(
            StageChainWorker,
            fn_constructor_kwargs={"specs": chain, "scenario": scenario},
            compute=ray.data.ActorPoolStrategy(
                size=workers, max_tasks_in_flight_per_actor=in_flight
            ),
            batch_size=1 if isolate else min(spec.batch_size for spec in chain),
            batch_format="numpy",
            num_cpus=max(spec.num_cpus for spec in chain) * cpus_per_worker,
            # A batch whose actor dies is retried this often, then its block fails (and its
            # samples are quarantined as lost) instead of being retried forever.
            max_task_retries=worker_retries,
            **extra,
        )
        scenario = None
    return ds


TEMPLATE_BATCH = 16  # dialogues per template-writer / validation batch (microseconds each)


def template_writer_stage(scen) -> StageSpec:
    """The offline template writer as a stage."""
    return StageSpec(
        "writer", write_template_scripts, {"settings": scen}, batch_size=TEMPLATE_BATCH
    )


def writer_stage(cfg: PlatformConfig, scen) -> StageSpec:
    """The script-writer stage the config asks for."""
    w = cfg.data.writer
    if w.kind == "template":
        return template_writer_stage(scen)
    from opens2s.data import writer_llm

    return writer_llm.llm_writer_stage(w, scen, cfg.data.validation)


def script_stages(cfg: PlatformConfig, scen, *, template_only: bool = False) -> list[StageSpec]:
    """Writer + validation + rendering: what both the fitting step and the main pass run."""
    writer = template_writer_stage(scen) if template_only else writer_stage(cfg, scen)
    return [
        writer,
        StageSpec(
            "validation",
            validate_scripts,
            {"settings": cfg.data.validation, "scenarios": scen},
            batch_size=TEMPLATE_BATCH,
        ),
        StageSpec(
            "render",
            TurnRenderer,
            {"audio": cfg.audio, "neutral_references": cfg.data.filters.verify_prosody},
            batch_size=cfg.data.render.batch_size,
            holds_model=cfg.audio.tts_engine != "espeak",
            num_gpus=cfg.data.render.gpus_per_worker,
        ),
    ]


def corpus_stages(cfg: PlatformConfig, scen, root: str, tokenizer_uri: str) -> list[StageSpec]:
    """Every stage after scenarios, in order."""
    d = cfg.data
    return [
        *script_stages(cfg, scen),
        StageSpec(
            "units",
            AssistantUnitEncoder,
            {"tokenizer_uri": tokenizer_uri},
            batch_size=d.render.batch_size,
            holds_model=cfg.audio.unit_tokenizer != "mel_kmeans",
        ),
        StageSpec(
            "filters",
            AudioFilter,
            {"settings": d.filters, "audio": cfg.audio},
            batch_size=d.render.batch_size,
            holds_model=d.filters.max_wer is not None or d.filters.ser_model_path is not None,
        ),
        StageSpec(
            "output",
            output.AudioWriter,
            {"root": root, "render": d.render},
            batch_size=d.render.batch_size,
        ),
    ]


def corpus_uri(cfg: PlatformConfig) -> str:
    """The corpus root: ``data.output.uri`` or ``<run_dir>/corpus``."""
    return cfg.corpus_uri()


# Audio settings that change what a corpus holds (VAD, vocoder, serving settings do not).
_AUDIO_CONTENT_FIELDS = {
    "sample_rate",
    "max_clipped_fraction",
    "tts_engine",
    "assistant_speaker",
    "cosyvoice_path",
    "cosyvoice_speakers_path",
    "unit_tokenizer",
    "unit_rate",
    "codebook_size",
    "unit_n_mels",
    "glm4voice_tokenizer_path",
    "asr_model_path",
    "speaker_encoder",
}


def _content_settings(cfg: PlatformConfig) -> dict[str, Any]:
    """The settings that decide what the corpus holds (a resumed run must not change them)."""
    d = cfg.data
    writer = d.writer.model_dump(exclude={"batch_size", "gpus_per_worker", "vllm_engine_kwargs"})
    return {
        "scenarios": d.scenarios.model_dump(),
        "writer": writer,
        "validation": d.validation.model_dump(),
        "filters": d.filters.model_dump(),
        "audio_format": d.render.audio_format,
        "shard_size": d.output.shard_size,
        "speaker_embedding": d.output.speaker_embedding,
        "units": d.units.model_dump(exclude={"fit_dialogues"}),
        "audio": cfg.audio.model_dump(include=_AUDIO_CONTENT_FIELDS),
        # only when set: corpora built before the split existed resume unchanged
        **({"held_out_fraction": f} if (f := d.output.held_out_fraction) else {}),
    }


def check_build_config(root: str, cfg: PlatformConfig) -> None:
    """Record the content settings at the first run; refuse to resume with different ones."""
    uri = storage.join(root, output.BUILD_CONFIG)
    current = json.loads(json.dumps(_content_settings(cfg)))
    if not storage.exists(uri):
        storage.write_text(uri, json.dumps(current, indent=2, sort_keys=True) + "\n")
        return
    previous = json.loads(storage.read_text(uri))
    old, new = _flatten(previous), _flatten(current)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed and not output.completed_shards(root):
        # An earlier run that committed nothing (it failed): its settings bind nothing, and
        # what it derived from them (a fitted unit tokenizer) is refitted under the new ones.
        if cfg.data.units.tokenizer_path is None:
            storage.delete(storage.join(root, output.UNIT_TOKENIZER))
        storage.delete(storage.join(root, output.ASSISTANT_EMBEDDING))
        storage.write_text(uri, json.dumps(current, indent=2, sort_keys=True) + "\n")
        return
    if changed:
        raise ValueError(
            f"{root} was built with other settings ({', '.join(changed)} differ); resume with the "
            f"same config or choose a new data.output.uri"
        )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _init_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init()


def _samples_of(ds) -> Iterable[Sample]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield from batch_to_samples(batch)


FIT_VECTORS_PER_UNIT = 3
FIT_MAX_ROUNDS = 6


def _rendered_assistant_waves(cfg: PlatformConfig, scen, indices: range) -> list:
    """Assistant waves of template-written, rendered dialogues ``indices`` (a Ray Data pass)."""
    import ray.data

    ds = ray.data.from_items([{"index": i} for i in indices])
    ds = apply_stages(
        ds,
        script_stages(cfg, scen, template_only=True),
        cfg.data.workers,
        cfg.data.cpus_per_worker,
        cfg.data.worker_retries,
        scenario=ScenarioStep(scen, cfg.data.output.shard_size),
    )
    return [
        s.waves[i]
        for s in _samples_of(ds)
        if s.ok
        for i, t in enumerate(s.turns)
        if t.role == "assistant"
    ]


def ensure_unit_tokenizer(cfg: PlatformConfig, scen, root: str, log: Log) -> str:
    """The unit tokenizer URI: the configured one, the corpus's own, or one fitted now on a sample
    of rendered assistant audio (template-written: the fit needs speech, not a particular writer)."""
    import ray

    if cfg.data.units.tokenizer_path:
        return cfg.data.units.tokenizer_path
    if cfg.audio.unit_tokenizer == "glm4voice":  # a pretrained tokenizer: nothing to fit
        if not cfg.audio.glm4voice_tokenizer_path:
            raise ValueError(
                "audio.unit_tokenizer is glm4voice but audio.glm4voice_tokenizer_path is unset"
            )
        return cfg.audio.glm4voice_tokenizer_path
    target = storage.join(root, output.UNIT_TOKENIZER)
    if storage.exists(target):
        return target
    start = time.perf_counter()
    # k-means needs clearly more unit vectors than units: render fit_dialogues, then more
    # (scenarios past the corpus's own indices are as good a sample) until there is enough.
    needed_seconds = FIT_VECTORS_PER_UNIT * cfg.audio.codebook_size / cfg.audio.unit_rate
    waves: list = []
    first, batch = 0, cfg.data.units.fit_dialogues
    for _ in range(FIT_MAX_ROUNDS):
        waves += _rendered_assistant_waves(cfg, scen, range(first, first + batch))
        first += batch
        if sum(len(w) for w in waves) / cfg.audio.sample_rate >= needed_seconds:
            break
    ray.get(ray.remote(num_cpus=1)(fit_unit_tokenizer).remote(waves, cfg.audio, target))
    log(
        f"[corpus] fitted unit tokenizer (K={cfg.audio.codebook_size}) on {len(waves)} assistant "
        f"turns of {first} dialogues in {time.perf_counter() - start:.1f} s -> {target}"
    )
    return target


def ensure_assistant_embedding(cfg: PlatformConfig, root: str, log: Log) -> str:
    """``spk/assistant.npy`` (relative to the corpus root), made once in a Ray task; "" when
    ``data.output.speaker_embedding`` is off."""
    import ray

    if not cfg.data.output.speaker_embedding:
        return ""
    target = storage.join(root, output.ASSISTANT_EMBEDDING)
    if not storage.exists(target):
        ray.get(ray.remote(num_cpus=1)(embed_assistant_voice).remote(cfg.audio, target))
        log(f"[corpus] assistant speaker embedding -> {target}")
    return output.ASSISTANT_EMBEDDING


def salvage_samples(
    indices: list[int],
    stages: list[StageSpec],
    workers: int,
    cpus_per_worker: float,
    worker_retries: int,
    scenario: ScenarioStep,
) -> Iterable[Sample]:
    """Rerun the samples of failed blocks one per block, one block per actor at a time: a sample
    that only shared an actor with a crashing one comes back; the crashing one fails alone."""
    import ray.data

    ds = ray.data.from_items([{"index": i} for i in indices], override_num_blocks=len(indices))
    ds = apply_stages(
        ds, stages, workers, cpus_per_worker, worker_retries, scenario=scenario, isolate=True
    )
    return _samples_of(ds)


def commit_shards(
    samples: Iterable[Sample],
    root: str,
    expected: dict[int, list[int]],
    scen,
    log: Log = print,
    assistant_spk_emb: str = "",
    salvage: Callable[[list[int]], Iterable[Sample]] | None = None,
    held_out_fraction: float = 0.0,
) -> None:
    """Gather finished samples per shard and commit each shard as soon as all of its samples
    (``expected``: shard -> sample indices) are back. Samples missing at the end (their Ray Data
    block failed: a crashed worker) are rerun through ``salvage`` when given; shards are then
    committed with the samples still missing quarantined as lost."""
    start = time.perf_counter()
    buffers: dict[int, dict[str, Sample]] = {s: {} for s in expected}
    committed = 0
    for sample in samples:
        shard = buffers.get(sample.shard)
        if shard is None:  # a shard not asked for: ignore rather than commit it twice
            continue
        shard[sample.id] = sample
        if len(shard) == len(expected[sample.shard]):
            output.write_shard(
                root, sample.shard, list(shard.values()), assistant_spk_emb, held_out_fraction
            )
            committed += 1
            kept = sum(s.ok for s in shard.values())
            log(
                f"[corpus] shard {sample.shard:05d} committed: {kept} kept, "
                f"{len(shard) - kept} quarantined ({committed}/{len(expected)} shards, "
                f"{time.perf_counter() - start:.1f} s)"
            )
            del buffers[sample.shard]
    missing = [
        i
        for shard_no, got in buffers.items()
        for i in expected[shard_no]
        if sample_id(scen.seed, i) not in got
    ]
    if missing and salvage is not None:
        back = 0
        for sample in salvage(sorted(missing)):
            if sample.shard in buffers:
                buffers[sample.shard][sample.id] = sample
                back += 1
        log(
            f"[corpus] {len(missing)} samples of failed blocks rerun one by one: {back} back, "
            f"{len(missing) - back} lost"
        )
    for shard_no, got in sorted(buffers.items()):
        lost = 0
        for i in expected[shard_no]:
            sid = sample_id(scen.seed, i)
            if sid not in got:
                sample = Sample(
                    id=sid, index=i, shard=shard_no, scenario=scenarios.scenario_for(i, scen)
                )
                sample.drop("worker", "lost: the Ray worker processing it failed (crash or OOM)")
                got[sid] = sample
                lost += 1
        output.write_shard(root, shard_no, list(got.values()), assistant_spk_emb, held_out_fraction)
        log(f"[corpus] shard {shard_no:05d} committed with {lost} lost samples quarantined")


def configure_ray_data(d) -> None:
    """Let up to ``data.max_failed_blocks`` blocks fail without stopping the job."""
    import ray.data

    ray.data.DataContext.get_current().max_errored_blocks = d.max_failed_blocks


def build_corpus(cfg: PlatformConfig, *, log: Log = print) -> dict[str, Any]:
    """Build (or finish building) the corpus the config describes; returns its summary."""
    import ray.data

    start = time.perf_counter()
    d = cfg.data
    root = corpus_uri(cfg)
    scen = scenarios.resolve_scenario_settings(d.scenarios, audio=cfg.audio)
    check_build_config(root, cfg)
    total, size = scen.num_dialogues, d.output.shard_size
    n_shards = math.ceil(total / size)
    done = output.completed_shards(root) & set(range(n_shards))
    pending = [s for s in range(n_shards) if s not in done]
    log(
        f"[corpus] {root}: {total} dialogues in {n_shards} shards; {len(done)} shards already "
        f"complete, {len(pending)} to build with {d.workers} workers"
    )
    if pending:
        _init_ray()
        configure_ray_data(d)
        tokenizer_uri = ensure_unit_tokenizer(cfg, scen, root, log)
        spk_emb = ensure_assistant_embedding(cfg, root, log)
        expected: dict[int, list[int]] = {
            s: list(range(s * size, min((s + 1) * size, total))) for s in pending
        }
        indices = [i for s in pending for i in expected[s]]
        ds = ray.data.from_items(
            [{"index": i} for i in indices],
            override_num_blocks=max(1, math.ceil(len(indices) / d.render.batch_size)),
        )
        stages = corpus_stages(cfg, scen, root, tokenizer_uri)
        run = (d.workers, d.cpus_per_worker, d.worker_retries)
        ds = apply_stages(ds, stages, *run, scenario=ScenarioStep(scen, size))

        def salvage(missing: list[int]) -> Iterable[Sample]:
            return salvage_samples(missing, stages, *run, ScenarioStep(scen, size))

        commit_shards(
            _samples_of(ds),
            root,
            expected,
            scen,
            log,
            spk_emb,
            salvage,
            held_out_fraction=d.output.held_out_fraction,
        )
    manifest, quarantine = output.merge_parts(root)
    result = summary.summarize(
        root,
        manifest,
        quarantine,
        planned=total,
        elapsed_seconds=time.perf_counter() - start,
        extra={"workers": d.workers, "writer": d.writer.kind},
    )
    summary.write_summary(root, result)
    log(summary.format_summary(result))
    if total and not result["dialogues_written"]:
        raise EmptyCorpusError(
            f"the corpus at {root} holds no dialogue: all {result['dialogues_quarantined']} "
            f"were quarantined (by reason: {result['drops_by_reason']}); see "
            f"{storage.join(root, output.QUARANTINE)} and fix the settings it names"
        )
    return result


class EmptyCorpusError(RuntimeError):
    """Every planned dialogue was quarantined: nothing to train on."""

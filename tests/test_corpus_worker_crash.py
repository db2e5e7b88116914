"""A worker process that dies mid-batch (os._exit, as a segfault or OOM kill would) loses only
the sample that kills it: the job finishes, blocks that died beside it (queued on the same actor)
are rerun one sample at a time by the salvage pass, the killer is quarantined as lost, the rest is
kept."""

from __future__ import annotations

import json
import os

import pytest
from opens2s import storage
from opens2s.config import load_config
from opens2s.data import output
from opens2s.data.pipeline import (
    ScenarioStep,
    StageSpec,
    _samples_of,
    apply_stages,
    commit_shards,
    configure_ray_data,
    salvage_samples,
)
from opens2s.data.sample import sample_id
from opens2s.data.scenarios import resolve_scenario_settings
from opens2s.data.writer_template import write_template_scripts

CRASH_INDEX = 4


def die_on_one_sample(samples):
    """A stage whose worker process dies when it meets sample CRASH_INDEX."""
    if any(s.index == CRASH_INDEX for s in samples):
        os._exit(1)
    return samples


@pytest.mark.timeout(180)
def test_a_crashed_worker_loses_only_its_block_and_its_samples_are_quarantined(
    ray_local, tmp_path
) -> None:
    import ray.data

    cfg = load_config(
        None,
        {"data.scenarios.num_dialogues": 6, "data.max_failed_blocks": 2, "data.worker_retries": 1},
    )
    scen = resolve_scenario_settings(cfg.data.scenarios, audio=cfg.audio)
    configure_ray_data(cfg.data)
    ds = ray.data.from_items([{"index": i} for i in range(6)], override_num_blocks=6)
    stages = [
        StageSpec("writer", write_template_scripts, {"settings": scen}, batch_size=1),
        StageSpec("crashy", die_on_one_sample, batch_size=1),
    ]
    run = {"workers": 1, "cpus_per_worker": 0.25, "worker_retries": 1}
    step = ScenarioStep(scen, shard_size=3)
    ds = apply_stages(ds, stages, **run, scenario=step)
    root = str(tmp_path / "corpus")
    salvaged: list[list[int]] = []

    def salvage(missing):
        salvaged.append(missing)
        return salvage_samples(missing, stages, **run, scenario=step)

    commit_shards(_samples_of(ds), root, {0: [0, 1, 2], 1: [3, 4, 5]}, scen, salvage=salvage)

    assert output.completed_shards(root) == {0, 1}
    kept = [
        json.loads(line)["id"]
        for s in (0, 1)
        for line in storage.read_text(output.shard_uri(root, s)).splitlines()
    ]
    lost = output.read_quarantine_parts(root)
    assert sorted(kept) == sorted(sample_id(0, i) for i in range(6) if i != CRASH_INDEX)
    assert [(q["id"], q["stage"]) for q in lost] == [(sample_id(0, CRASH_INDEX), "worker")]
    assert lost[0]["reason"].startswith("lost:")
    assert len(salvaged) == 1 and CRASH_INDEX in salvaged[0]

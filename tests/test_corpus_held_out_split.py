"""The corpus's held-out eval split: chosen by sample id, written to held_out/, never to shards/
(what training reads), and read back by the eval set loader as split ``held_out``."""

from __future__ import annotations

import json

import pytest
from opens2s.data import output
from opens2s.data.sample import Sample, Scenario, Turn, sample_id

pytestmark = pytest.mark.timeout(60)


def _sample(i: int) -> Sample:
    sc = Scenario("sad", 1.0, "work", "student", "en-us-m1", 1)
    s = Sample(id=sample_id(0, i), index=i, shard=0, scenario=sc)
    s.turns = [
        Turn("user", "I feel low today.", audio=f"audio/{s.id}/00_user.flac", seconds=1.0),
        Turn("assistant", f"I am sorry you feel low, number {i}.", seconds=1.0, units=[1, 2, 3]),
    ]
    return s


def test_held_out_rule_is_deterministic_by_id_and_near_its_fraction() -> None:
    ids = [sample_id(0, i) for i in range(2000)]
    held = [i for i in ids if output.is_held_out(i, 0.1)]
    assert held == [i for i in ids if output.is_held_out(i, 0.1)]
    assert 150 < len(held) < 250
    assert not any(output.is_held_out(i, 0.0) for i in ids)
    # a larger fraction keeps every id a smaller one held out: the split only grows
    assert set(held) <= {i for i in ids if output.is_held_out(i, 0.3)}


def test_write_shard_puts_held_out_dialogues_only_under_held_out(tmp_path) -> None:
    root = str(tmp_path / "corpus")
    samples = [_sample(i) for i in range(40)]
    output.write_shard(root, 0, samples, held_out_fraction=0.25)
    train = [json.loads(x)["id"] for x in (tmp_path / "corpus/shards/shard-00000.jsonl").open()]
    held = [json.loads(x)["id"] for x in (tmp_path / "corpus/held_out/shard-00000.jsonl").open()]
    assert held and train
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(s.id for s in samples)
    assert set(held) == {s.id for s in samples if output.is_held_out(s.id, 0.25)}
    assert output.held_out_count(root) == len(held)
    got = output.first_exchanges(root, "held_out")
    assert [g["id"] for g in got] == held
    assert got[0]["answer_units"] == [1, 2, 3]
    assert got[0]["question_audio"].endswith("00_user.flac")


def test_no_fraction_writes_no_held_out_folder(tmp_path) -> None:
    root = tmp_path / "corpus"
    output.write_shard(str(root), 0, [_sample(i) for i in range(5)])
    assert not (root / "held_out").exists()
    assert len((root / "shards/shard-00000.jsonl").read_text().splitlines()) == 5


def test_a_corpus_eval_set_is_its_held_out_split_plus_some_training_questions(tmp_path) -> None:
    from opens2s.evaluation.eval_set import load_eval_set

    root = str(tmp_path / "corpus")
    samples = [_sample(i) for i in range(40)]
    output.write_shard(root, 0, samples, held_out_fraction=0.25)
    held = [s for s in samples if output.is_held_out(s.id, 0.25)]
    items = load_eval_set(root, train_questions=2)
    assert [i.split for i in items] == ["held_out"] * len(held) + ["train"] * 2
    assert [i.item_id for i in items[: len(held)]] == [f"held_out/{s.id}" for s in held]
    assert items[0].reference == held[0].turns[1].text and items[0].error is None
    assert not {i.item_id.split("/")[1] for i in items[len(held) :]} & {s.id for s in held}
    only_train = tmp_path / "train-only"
    output.write_shard(str(only_train), 0, samples[:3])
    with pytest.raises(ValueError, match="no held-out dialogue"):
        load_eval_set(str(only_train), train_questions=0)

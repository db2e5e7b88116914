"""Importing the released OpenS2S dataset's JSONL layout (README "Data Preparation"): good lines
become records of the corpus (audio copied, paths relative, loadable by the model's record
encoder), in new shards after the existing ones; bad lines are quarantined with file, line and
reason; the summary counts both."""

from __future__ import annotations

import json

import numpy as np
import pytest
from opens2s.audio.io import write_audio
from opens2s.data import output
from opens2s.data.import_released import WRITER, import_released
from opens2s.data.summary import read_summary
from opens2s.model import build_model, build_tokenizer
from opens2s.model.records import RecordEncoder, parse_record

SR = 16000


def item(text="", audio="", units="", spk=""):
    return {"text": text, "audio": audio, "speech_units": units, "spk_emb": spk}


def line(user_items, answer="hello there", units="<|audio_0|><|audio_1|>", spk=""):
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": user_items},
                {"role": "assistant", "content": [item(answer, units=units, spk=spk)]},
            ]
        }
    )


def test_import_good_and_bad_lines(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "released"
    (src / "wav").mkdir(parents=True)
    write_audio(src / "wav/a.wav", 0.1 * rng.standard_normal(SR).astype(np.float32), SR)
    write_audio(tmp_path / "long.wav", 0.1 * rng.standard_normal(3 * SR).astype(np.float32), SR)
    write_audio(src / "wav/short.wav", np.zeros(4000, np.float32) + 0.01, SR)
    np.save(src / "spk.npy", np.ones((1, 1, 512), np.float32))
    lines = [
        line([item("continue the following sentence"), item(audio="wav/a.wav")]),  # relative
        line([item(audio=f"{tmp_path / 'long.wav'}:16000:24000")], spk="spk.npy"),  # slice
        "{not json",
        line([item(audio="wav/missing.wav")]),
        line([item(audio="wav/short.wav")]),
        line([item(audio="wav/a.wav")], units="<|audio_99999|>"),
        json.dumps({"messages": [{"role": "user", "content": [item(audio="wav/a.wav")]}]}),
        "",
    ]
    (src / "part.jsonl").write_text("\n".join(lines) + "\n")
    root = str(tmp_path / "corpus")

    report = import_released([src / "part.jsonl"], root, shard_size=4)
    assert report.records == 2 and report.shards == [0, 1]
    reasons = [q["reason"] for q in report.refused]
    assert [r.split(":")[0] for r in reasons] == [
        "json",
        "missing_audio",
        "too_short",
        "schema",
        "schema",
    ]
    assert "part.jsonl line 3" in reasons[0] and "99999" in reasons[3]
    assert "no assistant turn" in reasons[4]

    records = [
        json.loads(x)
        for uri in output.record_files(root)
        for x in open(uri).read().splitlines()  # noqa: SIM115 (local test corpus)
    ]
    assert len(records) == 2
    tokenizer, model = build_tokenizer(), build_model("tiny")
    encoder = RecordEncoder(tokenizer, model.config, root)
    first = parse_record(records[0], unit_vocab_size=1024)
    enc = encoder.encode(first)
    assert enc["speech_values"].shape[0] == 1  # the copied audio, found under the corpus root
    assert "continue the following sentence" in tokenizer.decode(enc["input_ids"])
    sliced = records[1]["messages"][0]["content"][0]["audio"]
    wave = encoder.load_wave(sliced, "r", "audio")
    assert wave.size == pytest.approx(24000, abs=10)  # the slice, not the whole file
    assert records[1]["messages"][1]["content"][0]["spk_emb"].startswith("spk/")

    summary = read_summary(root)
    assert summary["per_writer"] == {WRITER: 2} and summary["dialogues_quarantined"] == 5
    # importing the same file again adds nothing; another file lands in the next shard
    again = import_released([src / "part.jsonl"], root, shard_size=100)
    assert again.already_imported == 7 and again.shards == []
    (src / "more.jsonl").write_text(lines[0] + "\n")
    more = import_released([src / "more.jsonl"], root)
    assert more.shards == [2] and read_summary(root)["dialogues_written"] == 3


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        import_released([tmp_path / "nope.jsonl"], str(tmp_path / "c"))

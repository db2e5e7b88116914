"""A model served from S3 is copied into a directory of its own, fresh each time."""

from __future__ import annotations

from pathlib import Path

from opens2s import storage
from opens2s.serving import speech_stack


def test_each_s3_model_gets_its_own_cache_dir_and_no_stale_file_survives(
    s3_bucket: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(speech_stack, "MODEL_CACHE_ROOT", tmp_path / "cache")
    a, b = f"s3://{s3_bucket}/models/a", f"s3://{s3_bucket}/models/b"
    storage.write_text(storage.join(a, "config.json"), "A")
    storage.write_text(storage.join(a, "speakers", "old.npy"), "only in a's first upload")
    storage.write_text(storage.join(b, "config.json"), "B")

    local_a = speech_stack.model_cache_copy(a, storage.copy_to_local)
    local_b = speech_stack.model_cache_copy(b, storage.copy_to_local)
    assert local_a != local_b
    assert (local_a / "config.json").read_text() == "A"
    assert (local_b / "config.json").read_text() == "B"
    assert not (local_b / "speakers").exists()

    # A new upload to the same URI: the copy holds exactly the new files.
    storage.delete(storage.join(a, "speakers", "old.npy"))
    storage.write_text(storage.join(a, "config.json"), "A2")
    again = speech_stack.model_cache_copy(a, storage.copy_to_local)
    assert again == local_a
    assert sorted(p.relative_to(again).as_posix() for p in again.rglob("*")) == ["config.json"]
    assert (again / "config.json").read_text() == "A2"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [local_a.name, local_b.name]
    )

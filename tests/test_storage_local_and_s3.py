"""opens2s.storage against a local directory and a real S3-compatible server (moto on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opens2s import storage


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path) -> str:
    """A fresh empty root: a local directory or an S3 prefix in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/runs/a"


def test_write_read_list_exists_roundtrip(root: str) -> None:
    a = storage.join(root, "x", "a.txt")
    b = storage.join(root, "x", "y", "b.bin")
    assert not storage.exists(a)
    assert storage.list_prefix(root) == []
    storage.write_text(a, "héllo")
    storage.write_bytes(b, b"\x00\x01\x02")
    assert storage.exists(a) and storage.exists(storage.join(root, "x"))
    assert storage.read_text(a) == "héllo"
    assert storage.read_bytes(b) == b"\x00\x01\x02"
    with storage.open_input(b) as f:
        f.seek(1)
        assert f.read() == b"\x01\x02"
    assert storage.list_prefix(root) == sorted([a, b])
    storage.write_text(a, "second")  # overwrite replaces whole content
    assert storage.read_text(a) == "second"
    storage.delete(a)
    assert not storage.exists(a)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(a)


def test_local_atomic_write_leaves_no_temp_file_and_keeps_old_content_on_failure(
    tmp_path: Path,
) -> None:
    target = tmp_path / "d" / "f.json"
    storage.write_text(target, "old")

    # A payload that fails while being written must leave the old file intact.
    with pytest.raises(TypeError):
        storage.write_bytes(target, object())  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(os.listdir(target.parent)) == ["f.json"]


def test_upload_dir_and_copy_to_local_mirror_a_tree(root: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "audio" / "s1").mkdir(parents=True)
    (src / "shards").mkdir()
    (src / "audio" / "s1" / "u0.flac").write_bytes(b"flac-bytes")
    (src / "shards" / "shard-00000.jsonl").write_text('{"id": 1}\n')
    written = storage.upload_dir(src, storage.join(root, "corpus"))
    assert len(written) == 2
    assert storage.read_bytes(storage.join(root, "corpus", "audio", "s1", "u0.flac")) == (
        b"flac-bytes"
    )
    back = storage.copy_to_local(storage.join(root, "corpus"), tmp_path / "back")
    assert (back / "audio" / "s1" / "u0.flac").read_bytes() == b"flac-bytes"
    assert (back / "shards" / "shard-00000.jsonl").read_text() == '{"id": 1}\n'
    one = storage.copy_to_local(
        storage.join(root, "corpus", "shards", "shard-00000.jsonl"), tmp_path / "one"
    )
    assert one == tmp_path / "one" / "shard-00000.jsonl" and one.read_text() == '{"id": 1}\n'


def test_s3_directory_markers_are_not_listed_or_copied(s3_bucket: str, tmp_path: Path) -> None:
    # pyarrow's S3 filesystem (Ray Train's checkpoint uploads) leaves empty "dir/" objects.
    client = storage.s3_client()
    client.put_object(Bucket=s3_bucket, Key="ckpt/", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="ckpt/rank_0/", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="ckpt/rank_0/state.pt", Body=b"weights")
    uri = f"s3://{s3_bucket}/ckpt"
    assert storage.list_prefix(uri) == [f"{uri}/rank_0/state.pt"]
    back = storage.copy_to_local(uri, tmp_path / "ckpt")
    assert (back / "rank_0" / "state.pt").read_bytes() == b"weights"


def test_pyarrow_filesystem_writes_parquet_that_boto3_lists(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/tables/m.parquet"
    fs, path = storage.pyarrow_filesystem(uri)
    assert path == f"{s3_bucket}/tables/m.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "n": [1, 2]}), path, filesystem=fs)
    assert storage.list_prefix(f"s3://{s3_bucket}/tables") == [uri]
    table = pq.read_table(storage.open_input(uri))
    assert table.column("id").to_pylist() == ["a", "b"]


def test_s3_uri_without_bucket_is_rejected_with_the_uri_named() -> None:
    with pytest.raises(storage.StorageError, match="s3://"):
        storage.split_s3("s3:///key")
    assert storage.join("s3://b/p/", "x", "y.txt") == "s3://b/p/x/y.txt"


@pytest.mark.parametrize("key", ["runs/m/../../escaped.txt", "runs/m/a/../../../escaped.txt"])
def test_copy_to_local_refuses_s3_keys_that_climb_out_of_the_destination(
    s3_bucket: str, tmp_path: Path, key: str
) -> None:
    client = storage.s3_client()
    client.put_object(Bucket=s3_bucket, Key="runs/m/ok.txt", Body=b"ok")
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"evil")
    assert any(".." in k for k in storage.list_prefix(f"s3://{s3_bucket}/runs/m"))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(storage.StorageError, match=r"outside"):
        storage.copy_to_local(f"s3://{s3_bucket}/runs/m", dest)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_copy_to_local_refuses_an_absolute_looking_key(s3_bucket: str, tmp_path: Path) -> None:
    storage.s3_client().put_object(Bucket=s3_bucket, Key="runs/m//etc/evil.txt", Body=b"x")
    with pytest.raises(storage.StorageError, match=r"'/etc/evil.txt'"):
        storage.copy_to_local(f"s3://{s3_bucket}/runs/m", tmp_path / "dest")
    assert not list(tmp_path.rglob("evil.txt"))

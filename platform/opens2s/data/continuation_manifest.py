"""ASR/SER manifests for the continuation corpus: read one, import one from a folder of audio +
transcripts, or make one from the dialogue corpus's user turns (the tiny pipeline's source).

A manifest is JSONL (one object a line) or Parquet with the columns ``audio`` (a path relative to
the manifest's folder, an absolute path or an s3:// URI), ``text`` (the transcript; ``transcript``
is accepted too) and optionally ``emotion`` (``label`` too, as upstream's SER manifests name it)
and ``id``. Upstream's ``text_generation.py`` reads the same fields (``audio``, ``text``,
``label``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from opens2s import storage

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class ManifestError(ValueError):
    """A manifest that cannot be used at all (missing, empty, unreadable); the message names it."""


def _parent(uri: str) -> str:
    if storage.is_s3(uri):
        return uri.rsplit("/", 1)[0]
    return str(Path(uri).resolve().parent)


def _resolve(audio: str, parent: str) -> str:
    if storage.is_s3(audio) or Path(audio).is_absolute():
        return audio
    return storage.join(parent, audio)


def _entry(obj: Any, where: str, parent: str) -> dict[str, Any]:
    """One manifest row as ``{"audio", "transcript", "emotion", "source_id", "problem"}``."""
    entry = {"audio": "", "transcript": "", "emotion": "", "source_id": "", "problem": ""}
    if not isinstance(obj, dict):
        entry["problem"] = f"{where}: expected an object, got {type(obj).__name__}"
        return entry
    audio = obj.get("audio")
    text = obj.get("text", obj.get("transcript"))
    emotion = obj.get("emotion", obj.get("label")) or ""
    entry["source_id"] = str(obj.get("id") or "")
    if not isinstance(audio, str) or not audio.strip():
        entry["problem"] = f"{where}: no 'audio' path"
    elif not isinstance(text, str) or not text.strip():
        entry["problem"] = f"{where}: no 'text' (transcript)"
    elif not isinstance(emotion, str):
        entry["problem"] = f"{where}: 'emotion' must be a string, got {type(emotion).__name__}"
    else:
        entry.update(audio=_resolve(audio.strip(), parent), transcript=text.strip())
        entry["emotion"] = emotion.strip().lower()
    if not entry["audio"] and isinstance(audio, str):
        entry["audio"] = audio
    return entry


def read_asr_manifest(uri: str) -> list[dict[str, Any]]:
    """The manifest's rows in file order, each ``{"audio" (resolved URI), "transcript",
    "emotion", "source_id", "problem"}``; a bad row keeps its place with ``problem`` set (it is
    quarantined, never dropped silently). Raises :class:`ManifestError` for a missing, empty or
    unreadable manifest."""
    if not storage.exists(uri):
        raise ManifestError(f"ASR manifest {uri} does not exist")
    parent = _parent(uri)
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()
        except Exception as e:
            raise ManifestError(f"ASR manifest {uri} is not readable Parquet: {e}") from e
        entries = [_entry(r, f"{uri} row {i}", parent) for i, r in enumerate(rows)]
    else:
        entries = []
        for n, line in enumerate(storage.read_text(uri).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                entries.append(
                    {
                        **_entry({}, "", parent),
                        "problem": f"{uri} line {n}: not JSON: {e.msg} at char {e.pos}",
                    }
                )
                continue
            entries.append(_entry(obj, f"{uri} line {n}", parent))
    if not entries:
        raise ManifestError(f"ASR manifest {uri} holds no utterance")
    return entries


def write_manifest(uri: str, rows: list[dict[str, Any]]) -> str:
    """Write manifest rows (``{"audio", "text", "emotion"?, "id"?}``) as JSONL."""
    return storage.write_text(uri, "".join(json.dumps(r) + "\n" for r in rows))


def _librispeech_transcripts(folder: Path) -> dict[Path, str]:
    """``<utt-id> TEXT`` lines of every ``*.trans.txt`` in ``folder``, keyed by the audio stem."""
    found: dict[Path, str] = {}
    for trans in folder.glob("*.trans.txt"):
        for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                found[folder / utt] = text.strip()
    return found


def import_asr_dir(folder: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """A folder (searched recursively) of audio files with transcripts -> manifest rows and
    problems. A transcript is ``x.txt`` beside ``x.wav`` (any of WAV/FLAC/OGG/MP3), or a line
    ``x TEXT`` of a LibriSpeech-style ``*.trans.txt`` in the same folder. Every audio file is
    read through :func:`opens2s.audio.io.load_audio` (header checks, decoding); a file that is not
    usable, or has no transcript, is a problem ``{"path", "reason"}`` and the rest go on."""
    from opens2s.audio.io import AudioError, load_audio

    root = Path(folder)
    if not root.is_dir():
        raise ManifestError(f"{root} is not a directory of audio files and transcripts")
    rows: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    librispeech: dict[Path, str] = {}
    for trans_dir in sorted({p.parent for p in root.rglob("*.trans.txt")}):
        librispeech.update(_librispeech_transcripts(trans_dir))
    audio_files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    )
    stems = {p.with_suffix("") for p in audio_files}
    for path in audio_files:
        stem = path.with_suffix("")
        sidecar = path.with_suffix(".txt")
        if sidecar.is_file():
            text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        else:
            text = librispeech.get(stem)
        if text is None:
            problems.append(
                {"path": str(path), "reason": f"no transcript ({sidecar.name} or a *.trans.txt)"}
            )
            continue
        if not text:
            problems.append({"path": str(path), "reason": "empty transcript"})
            continue
        try:
            load_audio(str(path))
        except AudioError as e:
            problems.append({"path": str(path), "reason": f"unusable audio: {e.problem}"})
            continue
        rows.append({"id": str(stem.relative_to(root)), "audio": str(path.resolve()), "text": text})
    for stem in sorted(set(librispeech) - stems):
        problems.append({"path": str(stem), "reason": "transcript line without an audio file"})
    return rows, problems


def manifest_from_dialogue_corpus(corpus: str, out_uri: str) -> int:
    """Write an ASR/SER manifest of the dialogue corpus's user turns (audio, script text, the
    dialogue's emotion) to ``out_uri``; held-out dialogues are left out (they stay unseen).
    Returns the number of utterances. This is the tiny pipeline's source: no external data."""
    import pyarrow.parquet as pq

    from opens2s.data import output

    uri = storage.join(corpus, output.MANIFEST)
    if not storage.exists(uri):
        raise ManifestError(f"{corpus} has no {output.MANIFEST}: build the corpus first")
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    if "texts" not in table.column_names:
        raise ManifestError(
            f"{uri} has no 'texts' column (built before turn texts were kept): rebuild the corpus"
        )
    held_out = {
        json.loads(line)["id"]
        for f in output.record_files(corpus, "held_out")
        for line in storage.read_text(f).splitlines()
        if line.strip()
    }
    rows = []
    for r in table.select(["id", "emotion", "audio", "texts"]).to_pylist():
        if r["id"] in held_out or r["texts"] is None:
            continue
        pairs = zip(json.loads(r["audio"]), json.loads(r["texts"]), strict=True)
        for i, (audio, text) in enumerate(pairs):
            if audio and "_user." in audio.rsplit("/", 1)[-1]:
                rows.append(
                    {
                        "id": f"{r['id']}-{i:02d}",
                        "audio": storage.join(corpus, audio),
                        "text": text,
                        "emotion": r["emotion"],
                    }
                )
    if not rows:
        raise ManifestError(f"{corpus} holds no user turn outside the held-out split")
    write_manifest(out_uri, rows)
    return len(rows)

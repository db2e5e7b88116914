"""Training checkpoints: every rank's DeepSpeed (ZeRO) state plus what resuming and export need.

A checkpoint directory holds, under the DeepSpeed tag ``zero``, the model states file(s) and one
ZeRO optimizer shard per rank (each rank writes its own files into a local directory; Ray Train
uploads them all into the same ``checkpoint-<step>`` directory of run storage). Rank 0 adds
``opens2s_train.json`` (stage, step, LoRA settings), ``model_config/`` (the OpenS2S config) and
``tokenizer/``, so that a checkpoint alone is enough to export a ``from_pretrained`` directory.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opens2s import storage
from opens2s.config.train import LoraSection

TAG = "zero"
META_FILE = "opens2s_train.json"
MODEL_CONFIG_DIR = "model_config"
TOKENIZER_DIR = "tokenizer"
DIR_PATTERN = re.compile(r"checkpoint-(\d+)")
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train's record of a run's checkpoints, in the stage directory."""


@dataclass(frozen=True)
class TrainState:
    """Where training stands: optimizer steps done and the data position (epoch, micro-batches
    of this epoch already consumed by each worker)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def dir_name(step: int) -> str:
    """Name of the checkpoint directory for ``step`` in run storage."""
    return f"checkpoint-{step:07d}"


def save(
    engine: Any,
    directory: Path,
    state: TrainState,
    *,
    stage: str,
    lora: LoraSection | None,
    tokenizer: Any,
    rank: int,
) -> None:
    """Write this rank's part of the checkpoint into ``directory`` (collective: all ranks call)."""
    engine.save_checkpoint(str(directory), tag=TAG, client_state={"train_state": asdict(state)})
    if rank == 0:
        module = engine.module
        module.config.save_pretrained(str(directory / MODEL_CONFIG_DIR))
        tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        meta = {
            "stage": stage,
            "tag": TAG,
            "zero_stage": engine.zero_optimization_stage(),
            "lora": lora.model_dump() if lora is not None else None,
            **asdict(state),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def load(engine: Any, directory: Path) -> TrainState:
    """Restore weights, optimizer, scheduler and the data position from ``directory`` (checked
    with :func:`verify` first)."""
    verify(directory)
    path, client_state = engine.load_checkpoint(
        str(directory), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None or client_state is None:
        raise FileNotFoundError(f"{directory} holds no DeepSpeed checkpoint under tag {TAG!r}")
    return TrainState(**client_state["train_state"])


class CorruptCheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded safely: a file is missing, truncated or
    holds pickled objects outside :func:`safe_globals`."""

    def __init__(self, directory: Path | str, reason: str) -> None:
        super().__init__(f"checkpoint {directory} cannot be used: {reason}")
        self.directory = str(directory)
        self.reason = reason


def safe_globals() -> list[Any]:
    """The only Python classes a DeepSpeed checkpoint of ours may hold besides tensors and plain
    containers (ZeRO optimizer shards pickle these); anything else is refused unread."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


def safe_load(path: Path | str, *, mmap: bool = False) -> Any:
    """``torch.load`` that unpickles nothing but tensors, containers and :func:`safe_globals`:
    a checkpoint comes from storage a user or a bucket can write, and pickle runs code."""
    import torch

    with torch.serialization.safe_globals(safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def verify(directory: Path | str) -> None:
    """Check that every DeepSpeed file of checkpoint ``directory`` loads with :func:`safe_load`
    (pickled data only; tensors are memory-mapped, not read). Raises
    :class:`CorruptCheckpointError` naming the file.

    DeepSpeed's own loaders (resume, ``zero_to_fp32``) unpickle with ``weights_only=False``;
    a file that passed here holds only allow-listed globals, so loading it that way runs the
    same constructors and nothing else.
    """
    directory = Path(directory)
    try:
        tag = read_meta(directory).get("tag")
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(directory, str(e)) from e
    if tag != TAG:
        raise CorruptCheckpointError(directory, f"{META_FILE} names tag {tag!r}, expected {TAG!r}")
    for needed in (MODEL_CONFIG_DIR, TOKENIZER_DIR):  # rank 0 writes them with every checkpoint
        if not (directory / needed).is_dir():
            raise CorruptCheckpointError(directory, f"no {needed}/ (export needs it)")
    files = sorted((directory / TAG).glob("*.pt"))
    if not any(f.name.endswith("model_states.pt") for f in files):
        raise CorruptCheckpointError(directory, f"no model states file under {TAG}/")
    for f in files:
        try:
            safe_load(f, mmap=True)
        except Exception as e:  # truncated zip, foreign pickle globals, not a torch file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CorruptCheckpointError(directory, f"{f.relative_to(directory)}: {first}") from e


def read_meta(directory: Path) -> dict[str, Any]:
    """The ``opens2s_train.json`` of a checkpoint directory."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not an opens2s training checkpoint (no {META_FILE})"
        )
    return json.loads(meta_path.read_text())


def stored(stage_uri: str) -> list[str]:
    """URIs of the ``checkpoint-<step>`` directories in a stage's run storage, newest first."""
    names = set()
    prefix = stage_uri.rstrip("/") + "/"
    for uri in storage.list_prefix(stage_uri):
        first = uri[len(prefix) :].split("/", 1)[0] if uri.startswith(prefix) else ""
        if DIR_PATTERN.fullmatch(first):
            names.add(first)
    return [storage.join(stage_uri, n) for n in sorted(names, reverse=True)]


def _step_of(uri: str) -> int:
    match = DIR_PATTERN.fullmatch(uri.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else -1


def resume(
    engine: Any, handed: str | None, stage_uri: str, *, stored_too: bool = False, say: Any = print
) -> tuple[TrainState, str | None]:
    """Restore from the newest intact checkpoint of the stage, not newer than ``handed`` (the
    one Ray Train hands over); returns the state and the checkpoint used (None: from scratch).
    Without a handed one, the stored ones are used only when ``stored_too`` (Ray's record was
    dropped by :func:`forget_missing`): a directory Ray never registered may be half uploaded.

    A damaged checkpoint (truncated shard, foreign pickle; see :func:`verify`) is named through
    ``say`` and the one before it is tried, so one bad upload does not fail every attempt.
    """
    candidates = stored(stage_uri) if handed is not None or stored_too else []
    if handed is not None:
        candidates = [c for c in candidates if _step_of(c) <= _step_of(handed)]
        if all(_step_of(c) != _step_of(handed) for c in candidates):
            candidates.insert(0, handed)
    bad: list[str] = []
    for uri in candidates:
        with tempfile.TemporaryDirectory(prefix="opens2s-resume-") as tmp:
            local = storage.copy_to_local(uri, tmp) if storage.is_s3(uri) else Path(uri)
            try:
                verify(local)
            except CorruptCheckpointError as e:
                bad.append(f"{uri} ({e.reason})")
                say(f"checkpoint {uri} is damaged, trying the one before it: {e.reason}")
                continue
            return load(engine, local), uri
    if bad:
        raise CorruptCheckpointError(
            stage_uri, "no intact checkpoint to resume from: " + "; ".join(bad)
        )
    return TrainState(), None


def forget_missing(stage_uri: str, *, say: Any = print) -> list[str]:
    """Drop Ray Train's checkpoint record of a stage when it names checkpoint directories that
    are gone (a damaged one moved away): Ray would refuse to start the run and say to delete the
    whole stage. The stored checkpoints themselves are enough to resume (:func:`resume`).
    Returns the missing directory names."""
    snapshot = storage.join(stage_uri, RAY_SNAPSHOT_FILE)
    if not storage.exists(snapshot):
        return []
    named = set(DIR_PATTERN.findall(storage.read_text(snapshot)))
    present = {_step_of(uri) for uri in stored(stage_uri)}
    missing = sorted(f"checkpoint-{n}" for n in named if int(n) not in present)
    if missing:
        say(
            f"checkpoint(s) {', '.join(missing)} of {stage_uri} are gone; resuming from the "
            "newest one still there"
        )
        storage.delete(snapshot)
    return missing

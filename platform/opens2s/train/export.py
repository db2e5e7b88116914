"""Export a training checkpoint as a ``from_pretrained`` model directory the server loads.

The full fp32 weights are rebuilt from every rank's ZeRO shard with DeepSpeed's ``zero_to_fp32``
(ZeRO 1/2/3 alike; frozen parameters included), LoRA adapters are merged into the LLM, and the
directory is written in the released OpenS2S layout (``model/layout.py``: config, safetensors,
tokenizer, ``tts/``, ``audio/``, generation configs) plus, when the corpus has one, a copy of its
``units/tokenizer.npz`` so the server can turn units back into speech.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from opens2s import storage
from opens2s.config.train import LoraSection
from opens2s.train import checkpoints

UNITS_FILE = "units/tokenizer.npz"


def full_state_dict(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of the whole model, gathered from a checkpoint's DeepSpeed files."""
    meta = checkpoints.read_meta(ckpt_dir)
    tag = meta["tag"]
    checkpoints.verify(ckpt_dir)  # zero_to_fp32 unpickles: only allow-listed globals get there
    if meta["zero_stage"] == 0:
        # Without ZeRO the model states file already holds the full module.
        states = checkpoints.safe_load(ckpt_dir / tag / "mp_rank_00_model_states.pt")
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)


def legacy_names_mapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints of earlier versions name tensors as they did then (``LEGACY_WEIGHT_NAMES``)."""
    import re

    from opens2s.model.modeling import LEGACY_WEIGHT_NAMES

    out = {}
    for key, value in state.items():
        for pattern, new in LEGACY_WEIGHT_NAMES.items():
            key = re.sub(pattern, new, key)
        out[key] = value
    return out


def _rebuild_model(ckpt_dir: Path) -> tuple[Any, Any]:
    """The trained model (LoRA merged) and tokenizer from a local checkpoint directory."""
    from opens2s.model import OpenS2SConfig, OpenS2SModel
    from opens2s.model.tokenizer import load_tokenizer
    from opens2s.train.stages import add_lora, merge_lora

    meta = checkpoints.read_meta(ckpt_dir)
    config = OpenS2SConfig.from_pretrained(str(ckpt_dir / checkpoints.MODEL_CONFIG_DIR))
    tokenizer = load_tokenizer(ckpt_dir / checkpoints.TOKENIZER_DIR)
    model = OpenS2SModel(config)
    if meta.get("lora"):
        add_lora(model, LoraSection.model_validate(meta["lora"]))
    state = legacy_names_mapped(full_state_dict(ckpt_dir))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {ckpt_dir} does not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if meta.get("lora"):
        merge_lora(model)
    return model.float().eval(), tokenizer


def export_checkpoint(ckpt: Any, out: str, *, units_from: str | None = None) -> str:
    """Write checkpoint ``ckpt`` (a Ray ``Checkpoint``, a local path or an s3:// URI) to ``out``
    (local or s3://) as a ``save_pretrained`` directory; returns ``out``.

    ``units_from`` is a corpus root: its ``units/tokenizer.npz`` is copied along when present.
    """
    from opens2s.model.layout import save_model_dir

    with tempfile.TemporaryDirectory(prefix="opens2s-export-") as tmp:
        ckpt_dir = _local_checkpoint(ckpt, Path(tmp) / "ckpt")
        model, tokenizer = _rebuild_model(ckpt_dir)
        local_out = Path(tmp) / "model" if storage.is_s3(out) else Path(out)
        if local_out.exists():
            shutil.rmtree(local_out)
        local_out.mkdir(parents=True)
        # The released layout (model/layout.py): config, safetensors, tokenizer, tts/, audio/.
        save_model_dir(model, tokenizer, local_out)
        if units_from is not None:
            units_uri = storage.join(units_from, UNITS_FILE)
            if storage.exists(units_uri):
                target = local_out / UNITS_FILE
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(storage.read_bytes(units_uri))
        if storage.is_s3(out):
            storage.upload_dir(local_out, out)
    return out


def _local_checkpoint(ckpt: Any, scratch: Path) -> Path:
    """A local directory holding the checkpoint's files (downloaded when remote)."""
    if hasattr(ckpt, "to_directory"):  # ray.train.Checkpoint
        return Path(ckpt.to_directory(str(scratch)))
    uri = str(ckpt)
    if storage.is_s3(uri):
        if not storage.list_prefix(uri):
            raise FileNotFoundError(f"checkpoint {uri} holds no objects")
        return storage.copy_to_local(uri, scratch)
    path = Path(uri)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {uri} is not a directory")
    return path

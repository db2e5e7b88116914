"""The weights a training stage starts from: the ``model`` section (a checkpoint directory, local
or s3://, else a random-init preset), and the config + tokenizer the data pipeline encodes with."""

from __future__ import annotations

import tempfile
from typing import Any

from opens2s import storage
from opens2s.config.audio import AudioSection
from opens2s.config.model import ModelSection


def _local_checkpoint(section: ModelSection) -> ModelSection:
    """The section with an s3:// checkpoint fetched to a local directory (workers read files)."""
    update: dict[str, Any] = {"dtype": "float32", "device": "cpu"}
    if section.checkpoint and storage.is_s3(section.checkpoint):
        local = tempfile.mkdtemp(prefix="opens2s-init-")
        update["checkpoint"] = str(storage.copy_to_local(section.checkpoint, local))
    return section.model_copy(update=update)


def build_initial_model(section: ModelSection, audio: AudioSection) -> tuple[Any, Any]:
    """(model, tokenizer) to train: fp32 master weights on CPU; DeepSpeed moves and casts them.

    A preset's unit vocabulary and rate follow the ``audio`` section (the speech tokenizer's).
    """
    from opens2s.model import model_from_section

    return model_from_section(_local_checkpoint(section), audio)


def config_and_tokenizer(section: ModelSection, audio: AudioSection) -> tuple[Any, Any]:
    """(OpenS2SConfig, tokenizer) of the model, without building its weights (a checkpoint's,
    the parts' of ``components``, else the preset's)."""
    from opens2s.model import build_tokenizer
    from opens2s.model.layout import read_config_and_tokenizer
    from opens2s.model.presets import preset_config

    section = _local_checkpoint(section)
    if section.components is not None and not section.checkpoint:
        from opens2s.model.components import assemble_config_and_tokenizer

        return assemble_config_and_tokenizer(section.components, section, audio)
    if section.checkpoint:
        # The released layout's unit ids (tts/), as load_model applies them: records with
        # <|audio_N|> become the release's TTS ids.
        return read_config_and_tokenizer(section.checkpoint)
    return preset_config(section.preset, section, audio), build_tokenizer(section.preset)

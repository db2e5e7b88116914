"""The one config schema: every CLI command, job, Serve app and cluster manifest reads this.

Each section lives in its own module (``config/model.py``, ``config/data.py`` ...); this module
composes them into :class:`PlatformConfig` and loads it from YAML. Defaults are the embedded
laptop setting (local Ray, tiny models); ``jobs/configs/tiny.yaml`` spells them out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from opens2s.config.audio import AudioSection
from opens2s.config.cluster import ClusterSection
from opens2s.config.continuation import ContinuationSection
from opens2s.config.data import DataSection
from opens2s.config.eval import EvalSection
from opens2s.config.model import ModelSection
from opens2s.config.serve import ServeSection
from opens2s.config.train import TrainSection
from opens2s.config.turn import TurnSection

AUTH_TOKEN_ENV = "OPENS2S_SERVE_AUTH_TOKEN"
"""Environment variable that supplies ``serve.auth_token`` when the config holds none."""


class ConfigError(ValueError):
    """A config file that cannot be read or does not match the schema."""


class PlatformConfig(BaseModel):
    """Root of the config: one section per workload, plus where a run keeps its outputs."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str = "runs/tiny"
    """Local path or s3:// URI under which every step writes its outputs."""
    model: ModelSection = ModelSection()
    audio: AudioSection = AudioSection()
    data: DataSection = DataSection()
    continuation: ContinuationSection = ContinuationSection()
    train: TrainSection = TrainSection()
    serve: ServeSection = ServeSection()
    turn: TurnSection = TurnSection()
    eval: EvalSection = EvalSection()
    cluster: ClusterSection = ClusterSection()

    @model_validator(mode="after")
    def _scenario_names_known(self) -> PlatformConfig:
        """Emotions (and espeak speakers) named in ``data.scenarios`` must exist: otherwise the
        corpus job fails only after Ray started, with every sample quarantined."""
        from opens2s.audio import tts  # lazily: the audio package reads this config

        scen = self.data.scenarios
        unknown = sorted(set(scen.emotions or ()) - set(tts.EMOTIONS))
        if unknown:
            raise ValueError(
                f"data.scenarios.emotions: unknown {unknown}; known: {', '.join(tts.EMOTIONS)}"
            )
        if self.audio.tts_engine == "espeak":
            unknown = sorted(set(scen.user_speakers or ()) - set(tts.SPEAKERS))
            if unknown:
                raise ValueError(
                    f"data.scenarios.user_speakers: unknown espeak speakers {unknown}; known: "
                    f"{', '.join(sorted(tts.SPEAKERS))}"
                )
        return self

    @model_validator(mode="after")
    def _auth_token_from_environment(self) -> PlatformConfig:
        token = os.environ.get(AUTH_TOKEN_ENV)
        if self.serve.auth_token is None and token:
            self.serve = self.serve.model_copy(update={"auth_token": token})
        return self

    def without_secrets(self) -> PlatformConfig:
        """The config with ``serve.auth_token`` left out: what files others can read carry (a
        job's working dir, a ConfigMap, a RayService); the token travels as ``AUTH_TOKEN_ENV``."""
        return self.model_copy(update={"serve": self.serve.model_copy(update={"auth_token": None})})

    def corpus_uri(self) -> str:
        """Where the corpus lives: ``data.output.uri``, else ``<run_dir>/corpus``. The one copy of
        this rule: the corpus job writes there, training and the pipeline read there."""
        from opens2s import storage

        return self.data.output.uri or storage.join(self.run_dir, "corpus")

    def continuation_uri(self) -> str:
        """Where the continuation corpus (speech in, continued text out) lives and the
        ``understand`` stage reads it: ``continuation.output_uri``, else
        ``<run_dir>/continuation``."""
        from opens2s import storage

        return self.continuation.output_uri or storage.join(self.run_dir, "continuation")

    def to_yaml(self) -> str:
        """The config as YAML, every field spelled out."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PlatformConfig:
    """Load a YAML config (or the embedded default when ``path`` is None), applying overrides.

    ``overrides`` maps dotted keys (``"train.max_steps"``) to values.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {p} must hold a mapping at top level, got {type(loaded).__name__}"
            )
        raw = loaded or {}
    for key, value in (overrides or {}).items():
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"override {key}={value!r}: {where} is a single value "
                    f"({type(node).__name__}), not a section; set {where}=... instead"
                )
        node[parts[-1]] = value
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as e:
        where = f"config file {path}" if path else "config"
        raise ConfigError(f"{where} does not match the schema:\n{e}") from e


__all__ = [
    "AUTH_TOKEN_ENV",
    "AudioSection",
    "ClusterSection",
    "ConfigError",
    "ContinuationSection",
    "DataSection",
    "EvalSection",
    "ModelSection",
    "PlatformConfig",
    "ServeSection",
    "TrainSection",
    "TurnSection",
    "load_config",
]

"""The ``serve`` section of the platform config: the Ray Serve application and its limits.

Read by ``opens2s.serving`` (the deployments), ``opens2s serve`` and the RayService manifest
(``opens2s.serving.app.serve_app_args`` turns it into Serve application args).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AutoscalingSection(BaseModel):
    """Autoscaling of the model deployment (Ray Serve ``autoscaling_config``).

    An open response stream is one ongoing request for its whole life, so the target is the number
    of concurrent sessions one replica sustains in real time.
    """

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    """Responses decoding at once per replica above which Serve adds a replica."""
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    look_back_period_s: float = Field(12.0, gt=0)
    """Window the ongoing-request average is taken over (Serve wants it above its 10 s
    metrics interval)."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSection:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) must be <= "
                f"max_replicas ({self.max_replicas})"
            )
        return self


class LimitsSection(BaseModel):
    """Bounds on what one client may send; a request beyond them gets an error event or a 4xx."""

    model_config = ConfigDict(extra="forbid")

    max_frame_bytes: int = Field(64_000, gt=0)
    """Largest binary WebSocket frame (64 kB = 2 s of PCM16 at 16 kHz)."""
    max_text_message_bytes: int = Field(16_384, gt=0)
    """Largest JSON message from a client."""
    max_turn_seconds: float = Field(30.0, gt=0)
    """Longest user turn; longer speech is cut and answered."""
    max_session_seconds: float = Field(900.0, gt=0)
    """Longest WebSocket session (wall clock)."""
    idle_timeout_seconds: float = Field(60.0, gt=0)
    """A WebSocket session that sends nothing (no frame, no event) for this long gets
    ``session_idle`` and is closed, so idle clients cannot hold every session slot."""
    max_upload_bytes: int = Field(4_000_000, gt=0)
    """Largest file accepted by POST /v1/speech."""
    max_sessions_per_replica: int = Field(16, gt=0)
    """Responses one model replica decodes at once (its ``max_ongoing_requests``) and WebSocket
    sessions one ingress replica holds."""
    max_messages_per_second: float = Field(200.0, gt=0)
    """Client messages per second (averaged over 2 s) above which a session is closed."""
    max_audio_speed: float = Field(8.0, gt=0)
    """Seconds of audio a client may send per second of wall time, after a burst of
    ``max_audio_burst_seconds``: VAD runs on every sample, so a client cannot flood the ingress."""
    max_audio_burst_seconds: float = Field(30.0, gt=0)


class SamplingDefaults(BaseModel):
    """Sampling used when a client does not choose (``session.update`` may override)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0, le=2)
    """Text sampling temperature; 0 means greedy."""
    top_p: float = Field(0.95, gt=0, le=1)
    unit_temperature: float = Field(0.8, ge=0, le=2)
    """Speech-unit sampling temperature (0 = greedy). Upstream OpenS2S's worker samples the
    released model's units at 1.0 with ``unit_top_p`` 1.0 (jobs/configs/opens2s-8b.yaml)."""
    unit_top_p: float = Field(0.95, gt=0, le=1)
    max_text_tokens: int = Field(48, gt=0)
    max_units: int = Field(150, gt=0)
    seed: int | None = 0


class VocoderBlocks(BaseModel):
    """How decoded units reach the vocoder.

    ``growing``: the vocoder stream's own schedule (``audio.vocoder_first_block_units``, doubling
    up to ``audio.vocoder_max_block_units``, ``audio.vocoder_overlap_units`` of cross-faded
    overlap): first audio as soon as the first small block exists. ``fixed``: blocks of
    ``fixed_units`` (OpenS2S uses 24). ``whole``: decode everything, then vocode once. The last
    two are baselines for the benchmark.
    """

    model_config = ConfigDict(extra="forbid")

    schedule: Literal["growing", "fixed", "whole"] = "growing"
    fixed_units: int = Field(24, gt=0)


class ServeSection(BaseModel):
    """Settings of the Serve application: what model, where, how many, and the client limits."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str | None = None
    """An exported model directory (local path or s3://); None falls back to ``model.checkpoint``,
    then to ``model.preset`` (random init, with ``unit_tokenizer`` for the vocoder)."""
    unit_tokenizer: str | None = None
    """The unit tokenizer (``tokenizer.npz``) the vocoder inverts when the model directory holds
    none (``units/tokenizer.npz``); None with a preset fits a small one at replica start."""
    app_name: str = "opens2s"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, lt=65536)
    model_num_cpus: float = Field(0.5, ge=0)
    model_num_gpus: float = Field(0.0, ge=0)
    ingress_num_cpus: float = Field(0.25, ge=0)
    ingress_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingSection = AutoscalingSection()
    limits: LimitsSection = LimitsSection()
    sampling: SamplingDefaults = SamplingDefaults()
    vocoder_blocks: VocoderBlocks = VocoderBlocks()
    auth_token: str | None = None
    """Bearer token required on every route but / and /healthz; None disables auth, unless the
    ``OPENS2S_SERVE_AUTH_TOKEN`` environment variable holds one (how a Kubernetes Secret or a Ray
    job's environment delivers it: files others can read never carry it)."""
    transcribe_user_turns: bool = False
    """Transcribe each user turn (``audio.asr_*`` Whisper) on the ingress: the client gets an
    ``input.transcript`` event and later turns see the user's words in the conversation (off:
    earlier user turns reach the model as empty text)."""
    decode_threads: int = Field(1, ge=1)
    """torch threads of a model replica (replicas share the host's cores)."""

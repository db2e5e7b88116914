"""OpenS2SConfig: the fields of the released OpenS2S ``config.json``, plus a few of ours.

The released checkpoint's config holds three nested HF configs (``audio_encoder_config``,
``llm_config``, ``tts_lm_config``), the adapter's ``conv_kernel_sizes`` / ``adapter_inner_dim`` and
the ``interleave_strategy`` ("text:speech" span lengths). Fields we add (``spk_emb_dim``,
``unit_vocab_size``, ``unit_rate``) default to the released model's values, so a released
``config.json`` without them loads unchanged.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


class OpenS2SConfig(PreTrainedConfig):
    """Config of the whole speech-to-speech model (audio encoder, adapter, LLM, TTS LM)."""

    model_type = "omnispeech"
    sub_configs_defaults = {
        "audio_encoder_config": SubConfigSpec(
            config_class=AutoConfig, model_type="qwen2_audio_encoder"
        ),
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
        "tts_lm_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
    }

    audio_encoder_config: dict | PreTrainedConfig | None = None
    llm_config: dict | PreTrainedConfig | None = None
    tts_lm_config: dict | PreTrainedConfig | None = None
    lora_config: dict | None = None
    conv_kernel_sizes: str = "5,5"
    adapter_inner_dim: int = 512
    interleave_strategy: str = "4:8"
    # Ours. The released TTS LM hard-codes a 512-d speaker projection (spk2tts).
    spk_emb_dim: int = 512
    # Speech unit N is TTS LM id units_bias + N (N < unit_vocab_size). The released layout has
    # no such fields in config.json: its tts/ tokenizer holds them (<|audio_0|>'s id is the
    # bias, its eos ends speech) and load_model sets them from there (model/layout.py).
    unit_vocab_size: int = 16384
    unit_rate: float = 12.5
    units_bias: int = 0
    # TTS id appended to every unit sequence in training; None = the first id after the units.
    tts_eos_id: int | None = None
    # Further TTS ids that end speech when generated (tts/generation_config.json's eos ids).
    tts_stop_ids: list[int] | None = None
    # TTS id that pads unit batches (tts/generation_config.json's pad); None = eos + 1.
    tts_pad_id: int | None = None
    # Text-tokenizer id of <|im_audio|>, the placeholder the adapter's embeddings replace; set
    # from the tokenizer when a model is built or loaded (the released config has no such field).
    audio_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.text_span, self.speech_span = parse_interleave_strategy(self.interleave_strategy)
        kernels = [k for k in str(self.conv_kernel_sizes).split(",") if k.strip()]
        if not kernels or not all(k.strip().isdigit() and int(k) % 2 == 1 for k in kernels):
            raise ValueError(
                f"conv_kernel_sizes={self.conv_kernel_sizes!r}: expected comma-separated odd "
                "integers like '5,5'"
            )
        self.check_unit_ids()

    def check_unit_ids(self) -> None:
        """Units and end-of-speech ids must be distinct ids inside the TTS LM vocabulary."""
        vocab = self.tts_lm_config.vocab_size
        lo, hi = self.units_bias, self.units_bias + self.unit_vocab_size
        if lo < 0 or hi > vocab:
            raise ValueError(
                f"units_bias={self.units_bias} + unit_vocab_size={self.unit_vocab_size} = {hi} "
                f"exceeds tts_lm_config.vocab_size={vocab}: the unit ids must be TTS LM ids"
            )
        for sid in self.unit_stop_ids:
            if not 0 <= sid < vocab or lo <= sid < hi:
                raise ValueError(
                    f"end-of-speech id {sid} must be a TTS LM id (< {vocab}) outside the unit "
                    f"ids {lo}..{hi - 1}"
                )

    @property
    def tts_eos_token_id(self) -> int:
        """TTS LM id that ends a speech-unit sequence in training records."""
        if self.tts_eos_id is not None:
            return int(self.tts_eos_id)
        return self.units_bias + self.unit_vocab_size

    @property
    def unit_stop_ids(self) -> list[int]:
        """Every TTS LM id that ends speech when generated (the eos first)."""
        extra = [int(i) for i in self.tts_stop_ids or [] if int(i) != self.tts_eos_token_id]
        return [self.tts_eos_token_id, *dict.fromkeys(extra)]

    @property
    def audio_window_frames(self) -> int:
        """Log-mel frames (10 ms each) per audio-encoder window: ``2 * max_source_positions``.

        The encoder's stride-2 conv maps a window to ``max_source_positions`` positions and
        transformers' Whisper / Qwen2-Audio encoders accept exactly this input length: 3000
        frames (30 s) for the released 1500. Every feature computation derives its window here.
        """
        return 2 * int(self.audio_encoder_config.max_source_positions)

    @property
    def kernel_sizes(self) -> list[int]:
        """``conv_kernel_sizes`` as a list of ints."""
        return [int(k) for k in str(self.conv_kernel_sizes).split(",") if k.strip()]


def parse_interleave_strategy(strategy: str) -> tuple[int, int]:
    """Parse ``"t:s"`` (t text hidden states, then s units) into ``(t, s)``; both must be >= 1."""
    parts = str(strategy).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(
            f"interleave_strategy={strategy!r}: expected 'TEXT:SPEECH' with positive integers, "
            "e.g. '4:8'"
        )
    return int(parts[0]), int(parts[1])


# Lets AutoConfig (and tokenizer loading, which reads config.json) resolve "omnispeech".
AutoConfig.register(OpenS2SConfig.model_type, OpenS2SConfig, exist_ok=True)

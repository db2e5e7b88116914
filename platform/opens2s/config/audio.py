"""The ``audio`` section of the platform config: every speech component reads its settings here.

The classes in ``opens2s.audio`` take these values as their defaults (``AudioSection()``), so a
default lives in this file only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AudioSection(BaseModel):
    """Settings of the speech stack: I/O, TTS, units, vocoder, VAD, ASR, speaker embedding."""

    model_config = ConfigDict(extra="forbid")

    # I/O and features
    sample_rate: int = Field(16000, gt=0)
    """Rate of all model-side audio (encoder input, corpus audio, unit tokenizer, VAD, ASR)."""
    max_seconds: float = Field(60.0, gt=0)
    """Longest audio accepted by validate_audio where a caller gives no limit of its own."""
    max_clipped_fraction: float = Field(0.001, ge=0, le=1)
    """Share of samples at full scale (|x| >= 0.999) above which audio counts as clipped."""
    n_mels: int = Field(128, gt=0)
    """Log-mel bins of the audio encoder input (Whisper large-v3 / Qwen2-Audio: 128)."""

    # TTS
    tts_engine: Literal["espeak", "cosyvoice2"] = "espeak"
    """Corpus TTS: espeak-ng in-process (CPU) or a CosyVoice2-style instruct TTS (GPU)."""
    assistant_speaker: str = "assistant"
    """Speaker name the assistant turns are rendered with (an EspeakTTS speaker name)."""
    cosyvoice_path: str | None = None
    """Local directory of a CosyVoice2 model (the released CosyVoice2-0.5B layout); required when
    tts_engine is cosyvoice2."""
    cosyvoice_speakers_path: str | None = None
    """Directory of speaker prompt recordings for cosyvoice2, one ``<speaker>.wav`` each (any
    rate; the assistant's is ``<assistant_speaker>.wav``); None: ``<cosyvoice_path>/speakers``."""

    # Speech units and vocoder
    unit_tokenizer: Literal["mel_kmeans", "glm4voice"] = "mel_kmeans"
    unit_rate: float = 25.0
    """Units per second of the k-means tokenizer: 25 (4 stacked 10 ms frames) or 12.5 (8)."""
    codebook_size: int = Field(1024, gt=1)
    """Number of k-means units (the TTS LM's speech vocabulary)."""
    unit_n_mels: int = Field(80, gt=0)
    """Mel bins of the frames the k-means tokenizer stacks and the vocoder inverts."""
    kmeans_passes: int = Field(4, gt=0)
    """Passes of mini-batch k-means over the fitting data."""
    kmeans_batch_frames: int = Field(8192, gt=0)
    """Stacked frames per mini-batch: bounds the fit's memory."""
    unit_decoder_steps: int = Field(0, ge=0)
    """Training steps of the learned unit->mel decoder fitted after k-means (0: plain centroids).
    bench/units.py (K=2048, 25 units/s): 2000 steps bring resynthesis WER from 22.3% to 15.5%."""
    glm4voice_tokenizer_path: str | None = None
    """Local directory of the GLM-4-Voice tokenizer (16,384 units at 12.5/s) for the GPU path."""
    griffin_lim_iters: int = Field(32, gt=0)
    """Griffin-Lim iterations per vocoded block."""
    vocoder_first_block_units: int = Field(3, gt=0)
    """Units in the first streamed block (small: first audio early)."""
    vocoder_second_block_units: int = Field(8, gt=0)
    """Units in the second streamed block; later blocks double up to the largest. Every block
    costs a Griffin-Lim run whose per-iteration overhead does not shrink with the block, so the
    series grows fast after the first."""
    vocoder_max_block_units: int = Field(32, gt=0)
    """Largest streamed block, in units."""
    vocoder_overlap_units: int = Field(2, ge=1)
    """Units of context shared by consecutive streamed blocks; their audio is cross-faded."""
    vocoder_first_overlap_units: int = Field(1, ge=1)
    """Context units at the first seam only: the first block holds back this many units, so
    its audio leaves after ``first_block_units - first_overlap_units`` units are final (80 ms
    after 3 units at 25/s); a 40 ms raised-cosine cross-fade is still click-free (tested)."""
    glm4voice_decoder_path: str | None = None
    """Local directory of the GLM-4-Voice flow-matching + HiFT decoder for the GPU path."""

    # VAD / end of turn
    vad_engine: Literal["silero", "energy"] = "silero"
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability above which a 32 ms chunk counts as speech."""
    vad_silence_ms: int = Field(600, gt=0)
    """Silence after speech that ends a user's turn."""
    vad_min_speech_ms: int = Field(96, gt=0)
    """Speech needed before a turn counts as started (ignores clicks)."""

    # ASR
    asr_engine: Literal["faster_whisper"] = "faster_whisper"
    asr_model_path: str | None = None
    """Local CTranslate2 Whisper directory; None = the whisper tiny.en packaged in a wheel."""
    asr_beam_size: int = Field(1, gt=0)

    # Speaker embedding
    speaker_encoder: Literal["resemblyzer"] = "resemblyzer"
    """256-d speaker embedding (the model's spk_emb dimension for the tiny preset)."""

    @model_validator(mode="after")
    def _first_block_emits_audio(self) -> AudioSection:
        if self.vocoder_first_overlap_units >= self.vocoder_first_block_units:
            raise ValueError(
                f"audio.vocoder_first_overlap_units ({self.vocoder_first_overlap_units}) must be "
                f"smaller than audio.vocoder_first_block_units ({self.vocoder_first_block_units}):"
                " the first block would hold back all of its audio"
            )
        return self

"""CosyVoice2 instruct TTS from a local model directory (the released CosyVoice2-0.5B layout).

``CosyVoice2Model(model_dir)`` checks the directory, reads ``cosyvoice2.yaml`` as data and builds
every part with our own modules, each loaded strictly: the text-to-speech-token LM
(:mod:`cosyvoice2_llm`, ``llm.pt``), the flow and the HiFT vocoder (:mod:`cosyvoice2_flow`,
``flow.pt`` / ``hift.pt``) and the frontend (:mod:`cosyvoice2_frontend`: the Qwen tokenizer,
``campplus.onnx``, ``speech_tokenizer_v2.onnx``).

``instruct`` does what upstream's ``CosyVoice2.inference_instruct2`` does offline: the text is
split into pieces of about 60-80 tokens at sentence ends; for each piece the LM continues
``instruction + <|endofprompt|>`` (the prompt text; no prompt speech tokens: the instruction,
not the prompt recording, sets the style), and the flow renders the speech tokens after the
prompt recording's speech tokens and mel (cut to 2 mel frames per token), in the voice of its
CAM++ embedding; HiFT turns the mel into 24 kHz audio. Unlike upstream there is no text
normalisation (wetext/ttsfrd: numbers, abbreviations); text is spoken as written.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import torch

from opens2s.audio.cosyvoice2_flow import (
    CausalMaskedDiffWithXvec,
    causal_flow_config,
    cosyvoice2_hift_config,
)
from opens2s.audio.cosyvoice2_frontend import (
    ENDOFPROMPT,
    MAX_PROMPT_SECONDS,
    CosyVoice2Error,
    CosyVoice2Frontend,
    mel_config,
)
from opens2s.audio.cosyvoice2_llm import load_lm
from opens2s.audio.glm4voice_decoder import DecoderLoadError, load_strict, read_config
from opens2s.audio.glm4voice_hift import HiFTGenerator
from opens2s.audio.io import mono_wave

REQUIRED_FILES = (
    "cosyvoice2.yaml",
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v2.onnx",
    "CosyVoice-BlankEN/config.json",
)
SAMPLE_RATE = 24000
MIN_PROMPT_SECONDS = 0.2  # a few speech tokens; shorter prompts give the flow nothing to follow
# upstream split_paragraph for English (cosyvoice/utils/frontend_utils.py)
PIECE_MAX_TOKENS, PIECE_MIN_TOKENS, MERGE_TOKENS = 80, 60, 20
SENTENCE_ENDS = ".?!;:"

__all__ = ["CosyVoice2Error", "CosyVoice2Model", "SAMPLE_RATE", "split_text"]


def split_text(text: str, count_tokens) -> list[str]:
    """Pieces of ``text`` that end at sentence ends (``. ? ! ; :``, with a closing quote kept),
    joined while a piece stays within 80 tokens or has fewer than 60; a last piece under 20 tokens
    joins the one before. Pieces of punctuation alone are dropped. Text holding ``<|...|>`` markup
    is one piece, as upstream."""
    text = text.strip()
    if "<|" in text and "|>" in text:
        return [text]
    if text[-1] not in SENTENCE_ENDS:
        text += "."
    sentences: list[str] = []
    start = 0
    for i, c in enumerate(text):
        if c not in SENTENCE_ENDS:
            continue
        end = i + 2 if i + 1 < len(text) and text[i + 1] in '"”' else i + 1
        if i > start:
            sentences.append(text[start:end])
        elif sentences:
            sentences[-1] += text[start:end]
        start = end
    pieces: list[str] = []
    current = ""
    for s in sentences:
        if (
            count_tokens(current + s) > PIECE_MAX_TOKENS
            and count_tokens(current) > PIECE_MIN_TOKENS
        ):
            pieces.append(current)
            current = ""
        current += s
    if current:
        if pieces and count_tokens(current) < MERGE_TOKENS:
            pieces[-1] += current
        else:
            pieces.append(current)
    return [p for p in pieces if not _only_punctuation(p)]


def _only_punctuation(text: str) -> bool:
    return all(c.isspace() or unicodedata.category(c)[0] in "PS" for c in text)


class CosyVoice2Model:
    """CosyVoice2 from ``model_dir``: text + an instruction + a prompt recording -> 24 kHz audio."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise DecoderLoadError(f"{model_dir}: CosyVoice2 model directory does not exist")
        missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
        if missing:
            raise DecoderLoadError(
                f"{model_dir}: not a CosyVoice2 model directory: missing {', '.join(missing)}"
            )
        yaml_path = model_dir / "cosyvoice2.yaml"
        cfg = read_config(yaml_path)
        rate = cfg.get("sample_rate")
        if rate != SAMPLE_RATE:
            raise DecoderLoadError(f"{yaml_path}: sample_rate must be {SAMPLE_RATE}, got {rate!r}")
        self.device = torch.device(device)
        self.lm = load_lm(model_dir, cfg, str(yaml_path)).to(self.device)
        self.flow_cfg = causal_flow_config(cfg, str(yaml_path))
        self.flow = CausalMaskedDiffWithXvec(self.flow_cfg)
        load_strict(self.flow, model_dir / "flow.pt")
        self.hift = HiFTGenerator(cosyvoice2_hift_config(cfg, str(yaml_path)))
        load_strict(self.hift, model_dir / "hift.pt")
        self.flow.to(self.device).eval()
        self.hift.to(self.device).eval()
        if self.lm.cfg.speech_token_size > self.flow_cfg.vocab_size:
            raise DecoderLoadError(
                f"{yaml_path}: llm.speech_token_size {self.lm.cfg.speech_token_size} exceeds "
                f"flow.vocab_size {self.flow_cfg.vocab_size}"
            )
        self.frontend = CosyVoice2Frontend(model_dir, mel_config(cfg, str(yaml_path)))
        extra = len(self.frontend.tokenizer) - self.lm.text_vocab_size
        if extra > 0:
            raise DecoderLoadError(
                f"{model_dir / 'CosyVoice-BlankEN'}: the tokenizer has {len(self.frontend.tokenizer)}"
                f" tokens with CosyVoice2's specials, the Qwen2 embedding only "
                f"{self.lm.text_vocab_size}"
            )

    # -- pieces ---------------------------------------------------------------------------------

    def pieces(self, text: str) -> list[str]:
        """``text`` split as the LM is run on it (see :func:`split_text`)."""
        if not isinstance(text, str) or not text.strip():
            raise CosyVoice2Error("text", "empty text, nothing to speak")
        out = split_text(text, lambda s: len(self.frontend.text_ids(s)))
        if not out:
            raise CosyVoice2Error("text", f"{text!r} holds nothing to speak (punctuation only)")
        return out

    def speech_token_pieces(self, text: str, instruction: str, *, seed: int = 0) -> list[list[int]]:
        """The LM's speech tokens for each piece of ``text`` under ``instruction`` (one seeded
        generator across the pieces)."""
        prompt = self.frontend.text_ids(_prompt_text(instruction))
        gen = torch.Generator(device=self.lm.llm_decoder.weight.device).manual_seed(int(seed))
        out = []
        for piece in self.pieces(text):
            tokens = self.lm.generate(self.frontend.text_ids(piece), prompt, generator=gen)
            if not tokens:
                raise CosyVoice2Error("text", f"the LM gave no speech for {piece!r}")
            out.append(tokens)
        return out

    def prompt(self, wave: np.ndarray, sr: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The flow's prompt of a recording: (speech tokens ``[1, T]``, mel ``[1, 2T, 80]``,
        CAM++ embedding ``[1, 192]``), tokens and mel cut to the same length as upstream."""
        wave = mono_wave(wave, "prompt wave", finite=True)
        if int(sr) <= 0:
            raise CosyVoice2Error("prompt wave", f"sample rate must be positive, got {sr}")
        seconds = wave.size / sr
        if not MIN_PROMPT_SECONDS <= seconds <= MAX_PROMPT_SECONDS:
            raise CosyVoice2Error(
                "prompt wave",
                f"{seconds:.2f} s long; a prompt recording must last "
                f"{MIN_PROMPT_SECONDS}-{MAX_PROMPT_SECONDS:.0f} s",
            )
        tokens = self.frontend.speech_tokens(wave, sr)
        mel = self.frontend.prompt_mel(wave, sr)
        ratio = self.flow_cfg.token_mel_ratio
        n = min(mel.shape[1] // ratio, len(tokens))
        bad = [t for t in tokens[:n] if not 0 <= t < self.flow_cfg.vocab_size]
        if bad:
            raise DecoderLoadError(
                f"speech_tokenizer_v2.onnx: gave tokens outside [0, {self.flow_cfg.vocab_size}): "
                f"{bad[:5]}"
            )
        token_t = torch.tensor([tokens[:n]], dtype=torch.long, device=self.device)
        mel = mel[:, : ratio * n].to(self.device)
        return token_t, mel, self.frontend.speaker_embedding(wave, sr).to(self.device)

    def render(
        self, tokens: list[int], prompt: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> np.ndarray:
        """Speech tokens -> 24 kHz audio in the prompt's voice (``480 * 2`` samples per token)."""
        prompt_tokens, prompt_mel, embedding = prompt
        token_t = torch.tensor([tokens], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            mel = self.flow.inference(token_t, prompt_tokens, prompt_mel, embedding)
            wave = self.hift.inference(mel)[0]
        return wave[0].float().cpu().numpy()

    # -- API ------------------------------------------------------------------------------------

    def instruct(
        self,
        text: str,
        instruction: str,
        prompt_wave: np.ndarray,
        prompt_sr: int,
        *,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak ``text`` in the voice of ``prompt_wave`` as ``instruction`` asks (e.g. "Speak
        happily."): float32 mono at 24 kHz. The same seed gives the same audio."""
        return self.speak(text, instruction, self.prompt(prompt_wave, prompt_sr), seed=seed)

    def speak(
        self,
        text: str,
        instruction: str,
        prompt: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        *,
        seed: int = 0,
    ) -> np.ndarray:
        """:meth:`instruct` with the prompt already made by :meth:`prompt` (a caller that speaks
        many sentences in one voice makes it once)."""
        pieces = self.speech_token_pieces(text, instruction, seed=seed)
        wave = np.concatenate([self.render(tokens, prompt) for tokens in pieces])
        return wave.astype(np.float32, copy=False)


def _prompt_text(instruction: str) -> str:
    if not isinstance(instruction, str) or not instruction.strip():
        raise CosyVoice2Error(
            "instruction", "empty instruction; say how to speak, e.g. 'Speak sadly.'"
        )
    instruction = instruction.strip()
    return instruction if instruction.endswith(ENDOFPROMPT) else instruction + ENDOFPROMPT

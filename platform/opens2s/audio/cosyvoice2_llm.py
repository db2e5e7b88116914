"""CosyVoice2's text-to-speech-token LM (``llm.pt``): Qwen2 over text, then speech tokens.

The LM is a Qwen2 decoder (``CosyVoice-BlankEN/config.json``, built from its config, never
downloaded) with three small modules around it, named as in the released ``llm.pt`` so that its
state dict loads with ``strict=True``:

- ``llm_embedding`` (2 rows): the start-of-sequence row (0) and the task row (1) that separates
  text from speech;
- ``llm.model``: the ``Qwen2ForCausalLM`` (its text embedding embeds the text tokens; its output
  head is unused);
- ``llm_decoder``: last hidden state -> ``speech_token_size + 3`` scores (the speech tokens, then
  end-of-speech and two more stop tokens);
- ``speech_embedding``: a speech token -> the next step's input.

Generation is upstream's offline decoding (``Qwen2LM.inference`` without vLLM): the input is
``[sos, text(prompt_text + text), task, prompt_speech_tokens]`` embedded; each step samples from
the log-softmax of the scores with repetition-aware sampling (nucleus top-p/top-k, and a plain
draw from the whole distribution when the pick already occurs ``win_size * tau_r`` times in the
last ``win_size`` tokens); end-of-speech is barred before ``min_token_text_ratio x`` the text
length and decoding stops at ``max_token_text_ratio x`` it. Draws use the caller's
``torch.Generator``, so a seed reproduces a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from opens2s.audio.glm4voice_decoder import DecoderLoadError, config_field, load_strict

SOS, TASK_ID = 0, 1  # rows of llm_embedding
MIN_TOKEN_TEXT_RATIO = 2.0  # upstream Qwen2LM.inference defaults
MAX_TOKEN_TEXT_RATIO = 20.0


@dataclass(frozen=True)
class LMConfig:
    """The ``llm:`` section of cosyvoice2.yaml (released CosyVoice2-0.5B values as defaults)."""

    llm_input_size: int = 896
    llm_output_size: int = 896
    speech_token_size: int = 6561
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1

    @property
    def eos(self) -> int:
        """End-of-speech: the first score after the speech tokens."""
        return self.speech_token_size

    @property
    def stop_tokens(self) -> tuple[int, ...]:
        """Any of these ends decoding (end-of-speech and the two rows after it)."""
        return tuple(self.speech_token_size + i for i in range(3))


def lm_config(cfg: dict, path: str = "cosyvoice2.yaml") -> LMConfig:
    """The LM sizes and sampling parameters of a parsed cosyvoice2.yaml."""
    llm = cfg.get("llm")
    if not isinstance(llm, dict):
        raise DecoderLoadError(f"{path}: missing 'llm' section")
    sampling = llm.get("sampling")
    if not isinstance(sampling, dict):
        raise DecoderLoadError(f"{path}: missing 'llm.sampling' (ras_sampling's parameters)")
    out = LMConfig(
        llm_input_size=int(config_field(llm, "llm_input_size", "llm", path, int)),
        llm_output_size=int(config_field(llm, "llm_output_size", "llm", path, int)),
        speech_token_size=int(config_field(llm, "speech_token_size", "llm", path, int)),
        top_p=float(config_field(sampling, "top_p", "llm.sampling", path, float)),
        top_k=int(config_field(sampling, "top_k", "llm.sampling", path, int)),
        win_size=int(config_field(sampling, "win_size", "llm.sampling", path, int)),
        tau_r=float(config_field(sampling, "tau_r", "llm.sampling", path, float)),
    )
    if out.speech_token_size <= 0 or out.top_k <= 0 or out.win_size <= 0:
        raise DecoderLoadError(
            f"{path}: llm.speech_token_size, llm.sampling.top_k and win_size must be positive"
        )
    if not 0.0 < out.top_p <= 1.0:
        raise DecoderLoadError(f"{path}: llm.sampling.top_p must lie in (0, 1], got {out.top_p}")
    return out


def qwen2_config(blank_dir: str | Path):
    """The ``transformers.Qwen2Config`` of ``CosyVoice-BlankEN/config.json`` (local only)."""
    from transformers import Qwen2Config

    path = Path(blank_dir) / "config.json"
    if not path.is_file():
        raise DecoderLoadError(f"{path}: missing (the Qwen2 config of CosyVoice-BlankEN)")
    try:
        cfg = Qwen2Config.from_pretrained(str(blank_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise DecoderLoadError(f"{path}: not a readable Qwen2 config ({e})") from e
    if cfg.model_type != "qwen2":
        raise DecoderLoadError(f"{path}: model_type must be 'qwen2', got {cfg.model_type!r}")
    return cfg


# ---------------------------------------------------------------------------------------------
# sampling (upstream cosyvoice/utils/common.py: ras_sampling, nucleus_sampling, random_sampling)


def nucleus_sample(scores: torch.Tensor, top_p: float, top_k: int, generator) -> int:
    """Draw from the most likely tokens until their probability reaches ``top_p`` or there are
    ``top_k`` of them, in proportion to their probabilities."""
    probs, order = scores.softmax(dim=0).sort(descending=True, stable=True)
    kept: list[torch.Tensor] = []
    total = 0.0  # summed one by one in the scores' dtype, as upstream does
    for i in range(min(top_k, probs.numel())):
        if total >= top_p:
            break
        total = total + probs[i]
        kept.append(probs[i])
    pick = torch.stack(kept).multinomial(1, replacement=True, generator=generator)
    return int(order[int(pick)])


def random_sample(scores: torch.Tensor, generator) -> int:
    """Draw from the whole distribution."""
    return int(scores.softmax(dim=0).multinomial(1, replacement=True, generator=generator))


def ras_sample(scores: torch.Tensor, decoded: Sequence[int], cfg: LMConfig, generator) -> int:
    """Repetition-aware sampling: a nucleus draw, redrawn from the whole distribution (without
    that token) when it already fills ``win_size * tau_r`` of the last ``win_size`` tokens.
    ``scores`` is changed in place, as upstream's is."""
    pick = nucleus_sample(scores, cfg.top_p, cfg.top_k, generator)
    repeats = sum(1 for t in decoded[-cfg.win_size :] if t == pick)
    if repeats >= cfg.win_size * cfg.tau_r:
        scores[pick] = -float("inf")
        pick = random_sample(scores, generator)
    return pick


# ---------------------------------------------------------------------------------------------
# the LM


class Qwen2Encoder(nn.Module):
    """Holds the ``Qwen2ForCausalLM`` under ``model`` (the released names: ``llm.model.*``)."""

    def __init__(self, qwen_cfg) -> None:
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.model = Qwen2ForCausalLM(qwen_cfg)


class Qwen2LM(nn.Module):
    """Text tokens (+ an instruction/prompt text, + prompt speech tokens) -> speech tokens."""

    def __init__(self, cfg: LMConfig, qwen_cfg) -> None:
        super().__init__()
        if (
            qwen_cfg.hidden_size != cfg.llm_input_size
            or qwen_cfg.hidden_size != cfg.llm_output_size
        ):
            raise DecoderLoadError(
                f"cosyvoice2.yaml: llm.llm_input_size/llm_output_size ({cfg.llm_input_size}/"
                f"{cfg.llm_output_size}) must equal CosyVoice-BlankEN hidden_size "
                f"({qwen_cfg.hidden_size})"
            )
        self.cfg = cfg
        n = cfg.speech_token_size + 3
        self.llm_embedding = nn.Embedding(2, cfg.llm_input_size)
        self.llm = Qwen2Encoder(qwen_cfg)
        self.llm_decoder = nn.Linear(cfg.llm_output_size, n)
        self.speech_embedding = nn.Embedding(n, cfg.llm_input_size)

    @property
    def text_vocab_size(self) -> int:
        return self.llm.model.model.embed_tokens.num_embeddings

    def _ids(self, ids: Sequence[int], name: str, limit: int) -> torch.Tensor:
        t = torch.as_tensor([int(i) for i in ids], dtype=torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= limit):
            raise ValueError(f"{name} must lie in [0, {limit}), got {int(t.min())}..{int(t.max())}")
        return t.to(self.llm_decoder.weight.device).unsqueeze(0)

    def lm_input(
        self,
        text_ids: Sequence[int],
        prompt_text_ids: Sequence[int] = (),
        prompt_speech_tokens: Sequence[int] = (),
    ) -> torch.Tensor:
        """``[1, L, d]``: sos, the embedded prompt text then text, task, prompt speech tokens."""
        text = self._ids([*prompt_text_ids, *text_ids], "text ids", self.text_vocab_size)
        speech = self._ids(prompt_speech_tokens, "prompt speech tokens", self.cfg.speech_token_size)
        text_emb = self.llm.model.model.embed_tokens(text)
        rows = self.llm_embedding.weight
        return torch.cat(
            [
                rows[SOS].reshape(1, 1, -1),
                text_emb,
                rows[TASK_ID].reshape(1, 1, -1),
                self.speech_embedding(speech).to(text_emb.dtype),
            ],
            dim=1,
        )

    @torch.inference_mode()
    def logits(self, lm_input: torch.Tensor) -> torch.Tensor:
        """Scores ``[1, L, speech_token_size + 3]`` of every position of ``lm_input`` at once."""
        hidden = self.llm.model.model(inputs_embeds=lm_input).last_hidden_state
        return self.llm_decoder(hidden)

    def length_bounds(
        self,
        n_text: int,
        min_token_text_ratio: float = MIN_TOKEN_TEXT_RATIO,
        max_token_text_ratio: float = MAX_TOKEN_TEXT_RATIO,
    ) -> tuple[int, int]:
        """(fewest, most) speech tokens for ``n_text`` text tokens (the prompt text not counted)."""
        return int(n_text * min_token_text_ratio), int(n_text * max_token_text_ratio)

    @torch.inference_mode()
    def generate(
        self,
        text_ids: Sequence[int],
        prompt_text_ids: Sequence[int] = (),
        prompt_speech_tokens: Sequence[int] = (),
        *,
        generator: torch.Generator,
        min_token_text_ratio: float = MIN_TOKEN_TEXT_RATIO,
        max_token_text_ratio: float = MAX_TOKEN_TEXT_RATIO,
    ) -> list[int]:
        """Speech tokens for ``text_ids`` (offline, KV-cached), without the stop token."""
        if len(text_ids) == 0:
            raise ValueError("text_ids is empty: nothing to speak")
        device = self.llm_decoder.weight.device
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, the LM on {device}")
        min_len, max_len = self.length_bounds(
            len(text_ids), min_token_text_ratio, max_token_text_ratio
        )
        x = self.lm_input(text_ids, prompt_text_ids, prompt_speech_tokens)
        qwen = self.llm.model.model
        cache = None
        out: list[int] = []
        for step in range(max_len):
            res = qwen(inputs_embeds=x, cache=cache, use_cache=True)
            cache = res.cache
            scores = self.llm_decoder(res.last_hidden_state[0, -1]).log_softmax(dim=-1)
            if step < min_len:
                scores[self.cfg.eos] = -float("inf")
            token = ras_sample(scores, out, self.cfg, generator)
            if token in self.cfg.stop_tokens:
                break
            out.append(token)
            x = self.speech_embedding.weight[token].reshape(1, 1, -1)
        return out


def load_lm(model_dir: str | Path, cfg: dict, yaml_path: str = "cosyvoice2.yaml") -> Qwen2LM:
    """Build the LM from ``CosyVoice-BlankEN/config.json`` and the yaml's ``llm:`` section and
    load ``llm.pt`` strictly (a missing, unexpected or mis-shaped tensor names itself)."""
    model_dir = Path(model_dir)
    lm = Qwen2LM(lm_config(cfg, yaml_path), qwen2_config(model_dir / "CosyVoice-BlankEN"))
    load_strict(lm, model_dir / "llm.pt")
    return lm.eval()


__all__ = [
    "LMConfig",
    "Qwen2LM",
    "load_lm",
    "lm_config",
    "nucleus_sample",
    "qwen2_config",
    "ras_sample",
    "random_sample",
]

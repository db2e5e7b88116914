"""Streaming decoder: speech in, text deltas and speech-unit chunks out, from KV caches.

Each session is an explicit :class:`DecodeState` (both KV caches, positions, the pending LLM hidden
states, the sampled-but-not-yet-fed token and unit, its random generators). ``start`` prefills the
prompt once; ``step`` advances a list of sessions by one model forward each, batching the sessions
that need the same kind of forward (LLM token, TTS unit, TTS chunk of a given length): their
projections and MLPs run as one batch, attention per session over its own cache
(``decode_step``). Nothing is recomputed and ``generate`` is never called.

The TTS LM sees ``[speaker] + H[0:t] + U[0:s] + H[t:2t] + ...`` (``t:s`` = interleave strategy);
``H[i]`` is the projected LLM hidden state at the i-th input position from ``<|im_tts_start|>``
(its own state included, as OpenS2S trains). A sampled unit is fed together with the next forward
of its session, so a TTS chunk forward carries the last unit of the previous chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from opens2s.model.decode_step import KVBuffer, decode_step
from opens2s.model.modeling import OpenS2SModel
from opens2s.model.tokenizer import (
    AUDIO_END,
    AUDIO_START,
    AUDIO_TOKEN,
    DEFAULT_SYSTEM_PROMPT,
    IM_END,
    PAD_TOKEN,
    TTS_END,
    TTS_START,
)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; a temperature of 0 is greedy. Text uses ``temperature`` / ``top_p``,
    units ``unit_temperature`` / ``unit_top_p`` (upstream OpenS2S samples units at 1.0 / 1.0;
    the released preset's config says so). Text and units draw from two generators seeded
    ``seed`` and ``seed + 1``, so a session's draws do not depend on batching."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_text_tokens: int = 256
    max_units: int = 2048
    unit_temperature: float = 0.0
    unit_top_p: float = 1.0

    def __post_init__(self) -> None:
        for name in ("temperature", "unit_temperature"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name}={getattr(self, name)}: must be in [0, 100] (0 = greedy)")
        for name in ("top_p", "unit_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be in (0, 1]")
        if self.max_text_tokens < 1 or self.max_units < 1:
            raise ValueError("max_text_tokens and max_units must be >= 1")
        if not 0 <= self.seed < 2**63 - 1:
            raise ValueError(f"seed={self.seed}: must be in [0, 2**63 - 1)")

    def for_units(self) -> SamplingParams:
        """These settings with the unit temperature and top-p in the text fields (what
        ``sample_token`` reads)."""
        return replace(self, temperature=self.unit_temperature, top_p=self.unit_top_p)


@dataclass(frozen=True)
class TextDelta:
    """New text of the answer (may be empty-text-free: only emitted when text grew)."""

    text: str


@dataclass(frozen=True)
class UnitChunk:
    """Speech units produced by one step, in order (feed them to a vocoder stream)."""

    units: list[int]


@dataclass(frozen=True)
class Done:
    """The answer ended: ``complete`` (both streams ended), ``max_text_tokens`` or ``max_units``."""

    reason: str


Event = TextDelta | UnitChunk | Done


@dataclass
class DecodeState:
    """Everything one session's decoding needs between steps (no hidden globals)."""

    sampling: SamplingParams
    llm_kv: KVBuffer
    tts_kv: KVBuffer
    next_token: int
    pending: list[torch.Tensor]  # TTS inputs not yet fed: speaker slot, H states, last unit
    n_hidden_pending: int = 0
    phase: str = "text"  # "text" | "flush" | "unit" | "done"
    text_tokens: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    units_in_chunk: int = 0
    next_unit: int | None = None
    text_done: bool = False
    units_done: bool = False
    text_reason: str = ""
    unit_reason: str = ""
    emitted_text: str = ""
    outbox: list = field(default_factory=list)  # events produced by start(), sent by step()
    text_gen: torch.Generator | None = None
    unit_gen: torch.Generator | None = None
    unit_sampling: SamplingParams | None = None

    @property
    def done(self) -> bool:
        """True once a Done event was emitted."""
        return self.phase == "done"

    @property
    def llm_len(self) -> int:
        """Positions in the LLM cache (prompt + text tokens fed)."""
        return self.llm_kv.length

    @property
    def tts_len(self) -> int:
        """Positions in the TTS LM cache (speaker slot + hidden states + units fed)."""
        return self.tts_kv.length


def sample_token(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """Greedy (temperature 0) or temperature + top-p sampling from one row of logits."""
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    # The generators live on the CPU, so draws do not depend on the device the model runs on.
    logits = logits.float().cpu()
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cut = torch.cumsum(sorted_p, -1) - sorted_p > params.top_p
        sorted_p[cut] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))


def _greedy_picks(logits: torch.Tensor, settings: list[SamplingParams]) -> list[int] | None:
    """Every row's argmax in one op when every row's ``settings`` decode greedily (as
    ``sample_token`` picks at temperature 0), else None: sampled rows draw one by one from their
    generators."""
    if all(p.temperature <= 0 for p in settings):
        return logits.argmax(-1).tolist()
    return None


def unit_logit_ids(config) -> list[int]:
    """The TTS LM ids a unit step may pick, ascending: the units ``units_bias ..
    units_bias + unit_vocab_size - 1`` and the ids that end speech (never other TTS ids)."""
    bias = config.units_bias
    return sorted({*range(bias, bias + config.unit_vocab_size), *config.unit_stop_ids})


class UnitLogits:
    """Restricts TTS logits to :func:`unit_logit_ids` and maps a picked column back to its id: a
    slice when the ids are contiguous (units then end of speech, as our models lay them out),
    else one gather."""

    def __init__(self, config, device: torch.device) -> None:
        ids = unit_logit_ids(config)
        self.start = ids[0]
        self.contiguous = ids[-1] - ids[0] + 1 == len(ids)
        self.ids = ids
        self.index = None if self.contiguous else torch.tensor(ids, device=device)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.contiguous:
            return logits[..., self.start : self.start + len(self.ids)]
        return logits.index_select(-1, self.index)

    def token(self, column: int) -> int:
        """TTS id of a column of the restricted logits."""
        return self.start + column if self.contiguous else self.ids[column]


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _bridge(model: OpenS2SModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.text_to_tts`` as two functional calls on its own weights when it is the plain
    Linear + LayerNorm of the released layout (a text step's module calls cost more than their
    math), else the method itself."""
    linear, norm = model.llm2tts, model.llm_ln
    if type(linear) is not nn.Linear or type(norm) is not nn.LayerNorm:
        return model.text_to_tts

    def text_to_tts(hidden: torch.Tensor) -> torch.Tensor:
        projected = F.linear(hidden, linear.weight, linear.bias)
        return F.layer_norm(projected, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    return text_to_tts


class StreamingDecoder:
    """Decodes many sessions step by step; see the module docstring for the schedule."""

    def __init__(self, model: OpenS2SModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        for lm in (model.llm_model, model.tts_lm_model):
            # decode_step keeps its path choice on the module: a new decoder re-checks it (e.g.
            # after LoRA layers were injected or merged).
            lm.__dict__.pop("_opens2s_lean", None)
        self.tokenizer = tokenizer
        self.config = model.config
        self.text_span = model.config.text_span
        self.speech_span = model.config.speech_span
        self.units_bias = model.config.units_bias
        self.unit_stops = frozenset(model.config.unit_stop_ids)
        self.unit_logits = UnitLogits(model.config, next(model.parameters()).device)
        vocab = tokenizer.get_vocab()
        self.end_tokens = {vocab[t] for t in (TTS_END, IM_END, PAD_TOKEN) if t in vocab}
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        self.end_tokens |= set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        # Module look-ups cost more than a one-position step's math: keep the references.
        self._llm = model.llm_model
        self._tts = model.tts_lm_model
        self._llm_embed = embed = model.llm_model.get_input_embeddings()
        # A plain embedding table is indexed directly (a module call per text step costs more).
        plain = type(embed) is nn.Embedding and embed.max_norm is None
        self._llm_table = embed.weight if plain else None
        self._text_to_tts = _bridge(model)
        self._tts_embed = model.tts_lm_model.get_input_embeddings().weight
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    # ------------------------------------------------------------------ prompt
    def prompt_ids(
        self, history: Sequence[dict] | None = None, system_prompt: str | None = None
    ) -> list[int]:
        """Ids of ``history`` + one user audio turn, built as upstream OpenS2S's worker builds
        them: string contents (the audio as ``<|im_audio_start|><|im_audio|><|im_audio_end|>``),
        the system prompt first, the tokenizer's chat template with a generation prompt and
        thinking off, then ``<|im_tts_start|>``. ``<|im_audio|>`` stays in as the placeholder
        (upstream splits there and inserts -200; the special token encodes alone, so the ids
        around it are the same).

        ``history`` is earlier turns as text (``{"role", "content": str}``); earlier assistant
        answers were spoken, so they are laid out as TTS spans, as training records have them.
        """
        system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        messages: list[dict] = [{"role": "system", "content": system}]
        for i, m in enumerate(history or []):
            role, content = m.get("role"), m.get("content")
            if role not in ("user", "assistant", "system") or not isinstance(content, str):
                raise ValueError(
                    f"history[{i}]: expected {{'role': 'user'|'assistant', 'content': str}}, "
                    f"got role={role!r}, content of type {type(content).__name__} (earlier "
                    "audio turns go in as their transcripts)"
                )
            if role == "assistant":
                content = TTS_START + content + TTS_END
            messages.append({"role": role, "content": content})
        messages.append({"role": "user", "content": AUDIO_START + AUDIO_TOKEN + AUDIO_END})
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, enable_thinking=False
        )
        if not text.endswith(TTS_START):
            text += TTS_START
        return self.tokenizer.encode(text, add_special_tokens=False)

    def features(
        self, wave: np.ndarray | None, audio_features: tuple[np.ndarray, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``1 x n_mels x Wk`` and its frame mask, from a 16 kHz wave or given.

        ``W`` is the model's encoder window, ``config.audio_window_frames`` (3000 = 30 s released).
        """
        if (wave is None) == (audio_features is None):
            raise ValueError("give exactly one of wave= (16 kHz float32) or audio_features=")
        if wave is not None:
            from opens2s.audio.features import log_mel

            audio_features = log_mel(
                np.asarray(wave, dtype=np.float32),
                16000,
                self.config.audio_encoder_config.num_mel_bins,
                self.config.audio_window_frames,
            )
        feats, valid = audio_features
        feats = np.asarray(feats, dtype=np.float32)
        n_mels = self.config.audio_encoder_config.num_mel_bins
        window = self.config.audio_window_frames
        if feats.ndim != 2 or feats.shape[0] != n_mels or feats.shape[1] % window:
            raise ValueError(
                f"audio_features of shape {feats.shape}: expected [{n_mels}, {window}*k] log-mel "
                "(the model's encoder window, config.audio_window_frames)"
            )
        mask = torch.zeros(1, feats.shape[1], dtype=torch.long)
        mask[0, : int(valid)] = 1
        return torch.from_numpy(feats)[None].to(self.device), mask.to(self.device)

    @torch.no_grad()
    def prompt_embeds(
        self,
        wave: np.ndarray | None = None,
        audio_features: tuple[np.ndarray, int] | None = None,
        history: Sequence[dict] | None = None,
        system_prompt: str | None = None,
    ) -> torch.Tensor:
        """LLM input embeddings ``L x D`` of the prompt with the audio spliced in."""
        ids = torch.tensor([self.prompt_ids(history, system_prompt)], device=self.device)
        values, mask = self.features(wave, audio_features)
        audio = self.model.encode_audio(values.to(self.dtype), mask)
        embeds, _, _ = self.model.splice_audio(ids, None, audio)
        return embeds[0]

    def speaker_embeds(self, speaker_embedding: np.ndarray | None) -> torch.Tensor:
        """The TTS LM's first input ``1 x H`` for a speaker embedding (zeros when None)."""
        dim = self.config.spk_emb_dim
        spk = np.zeros(dim, np.float32) if speaker_embedding is None else speaker_embedding
        spk = np.asarray(spk, dtype=np.float32).reshape(-1)
        if spk.size != dim:
            raise ValueError(f"speaker_embedding has {spk.size} values, expected {dim}")
        t = torch.from_numpy(spk)[None].to(self.device, self.dtype)
        return self.model.speaker_to_tts(t)[0]

    # ------------------------------------------------------------------ sessions
    @torch.no_grad()
    def start(
        self,
        wave: np.ndarray | None = None,
        *,
        audio_features: tuple[np.ndarray, int] | None = None,
        history: Sequence[dict] | None = None,
        system_prompt: str | None = None,
        speaker_embedding: np.ndarray | None = None,
        sampling: SamplingParams | None = None,
        prompt_embeds: torch.Tensor | None = None,
    ) -> DecodeState:
        """Prefill one session (the only pass over the prompt) and sample its first text token."""
        sampling = sampling or SamplingParams()
        if prompt_embeds is None:
            prompt_embeds = self.prompt_embeds(wave, audio_features, history, system_prompt)
        llm_kv = KVBuffer()
        hidden, logits = decode_step(
            self.model.llm_model, prompt_embeds[None], [llm_kv], logits=True
        )
        last = hidden[0, -1:]
        state = DecodeState(
            sampling=sampling,
            llm_kv=llm_kv,
            tts_kv=KVBuffer(),
            next_token=-1,
            pending=[self.speaker_embeds(speaker_embedding), self.model.text_to_tts(last)],
            n_hidden_pending=1,
            text_gen=_generator(sampling.seed),
            unit_gen=_generator(sampling.seed + 1),
            unit_sampling=sampling.for_units(),
        )
        self._take_text_token(state, sample_token(logits[0], sampling, state.text_gen))
        state.outbox.extend(self._text_delta(state))
        return state

    def _take_text_token(self, s: DecodeState, token: int) -> None:
        s.next_token = token
        if token not in self.end_tokens:
            s.text_tokens.append(token)

    def _text_delta(self, s: DecodeState, final: bool = False) -> list[Event]:
        # What decode() runs for a flat list of ints, minus its per-call scan of the whole list
        # (to_py_obj), which grows with the answer and runs every text step.
        text = self.tokenizer._decode(s.text_tokens, skip_special_tokens=True)
        # Byte-level BPE may end mid-character: wait for the rest unless the text has ended.
        if (text.endswith("\ufffd") and not final) or len(text) <= len(s.emitted_text):
            return []
        delta, s.emitted_text = text[len(s.emitted_text) :], text
        return [TextDelta(delta)]

    def _after_text(self, s: DecodeState, fed: int) -> None:
        """Book-keeping after feeding token ``fed`` to the LLM: does the text stream end here?"""
        if fed in self.end_tokens:
            s.text_done, s.text_reason = True, "complete"
        elif len(s.text_tokens) >= s.sampling.max_text_tokens:
            s.text_done, s.text_reason = True, "max_text_tokens"

    def _next_phase(self, s: DecodeState) -> None:
        if s.units_done:
            s.phase = "text" if not s.text_done else "done"
        elif s.n_hidden_pending >= self.text_span or (s.text_done and s.n_hidden_pending):
            s.phase = "flush"
        elif s.units_in_chunk >= self.speech_span and not s.text_done:
            s.phase = "text"
        elif s.next_unit is not None and (s.units_in_chunk < self.speech_span or s.text_done):
            s.phase = "unit"
        else:
            s.phase = "text" if not s.text_done else "done"

    def _take_unit(self, s: DecodeState, token: int, events: list[Event]) -> None:
        """Book a picked TTS id: an end-of-speech id ends the units, any other is unit
        ``token - units_bias`` (the N of ``<|audio_N|>``) and is fed at the next TTS forward."""
        if token in self.unit_stops:
            s.units_done, s.unit_reason, s.next_unit = True, "complete", None
            return
        unit = token - self.units_bias
        s.units.append(unit)
        s.units_in_chunk += 1
        if len(s.units) >= s.sampling.max_units:
            s.units_done, s.unit_reason, s.next_unit = True, "max_units", None
        else:
            s.next_unit = token
        events.append(UnitChunk([unit]))

    def step(self, states: list[DecodeState]) -> list[list[Event]]:
        """Advance every live session by one forward; returns each session's new events."""
        if not torch.is_inference_mode_enabled():  # decoding never needs a graph or versions
            with torch.inference_mode():
                return self._step(states)
        return self._step(states)

    def _step(self, states: list[DecodeState]) -> list[list[Event]]:
        events: list[list[Event]] = []
        llm: list[int] = []
        tts: dict[int, list[int]] = {}  # by new TTS positions: one batched forward per length
        for i, s in enumerate(states):
            events.append(s.outbox)
            s.outbox = []
            if s.phase == "text":
                llm.append(i)
            elif s.phase == "unit":
                tts.setdefault(1, []).append(i)
            elif s.phase == "flush":
                tts.setdefault(len(s.pending) + (s.next_unit is not None), []).append(i)
        if llm:
            self._llm_step([states[i] for i in llm], [events[i] for i in llm])
        for idx in tts.values():
            self._tts_step([states[i] for i in idx], [events[i] for i in idx])
        for s, ev in zip(states, events, strict=True):
            if s.phase == "done":
                continue
            self._next_phase(s)
            if s.phase == "done":
                reason = "complete"
                for r in (s.text_reason, s.unit_reason):
                    if r and r != "complete":
                        reason = r
                ev.append(Done(reason))
        return events

    def _llm_step(self, group: list[DecodeState], events: list[list[Event]]) -> None:
        table = self._llm_table
        if table is not None and len(group) == 1:
            token = group[0].next_token
            x = table[None, token : token + 1]
        else:
            ids = torch.tensor([[s.next_token] for s in group], device=self.device)
            x = self._llm_embed(ids) if table is None else table[ids]
        hidden, logits = decode_step(self._llm, x, [s.llm_kv for s in group], logits=True)
        projected = self._text_to_tts(hidden[:, -1])
        greedy = _greedy_picks(logits, [s.sampling for s in group])
        for i, s in enumerate(group):
            fed = s.next_token
            if not s.units_done:
                s.pending.append(projected[i : i + 1])
                s.n_hidden_pending += 1
            self._after_text(s, fed)
            if s.text_done:
                events[i].extend(self._text_delta(s, final=True))
            else:
                token = greedy[i] if greedy else sample_token(logits[i], s.sampling, s.text_gen)
                self._take_text_token(s, token)
                events[i].extend(self._text_delta(s))

    def _tts_step(self, group: list[DecodeState], events: list[list[Event]]) -> None:
        embed = self._tts_embed
        inputs = []
        for s in group:
            unit, s.next_unit = s.next_unit, None
            if s.phase != "flush":  # "unit": the last sampled unit alone
                inputs.append(embed[unit : unit + 1])
                continue
            parts = s.pending if unit is None else [embed[unit : unit + 1], *s.pending]
            s.pending, s.n_hidden_pending, s.units_in_chunk = [], 0, 0
            inputs.append(parts[0] if len(parts) == 1 else torch.cat(parts))
        x = inputs[0][None] if len(inputs) == 1 else torch.stack(inputs)
        _, logits = decode_step(self._tts, x, [s.tts_kv for s in group], logits=True)
        logits = self.unit_logits(logits)  # only unit ids and the end of speech are valid
        greedy = _greedy_picks(logits, [s.unit_sampling for s in group])
        for i, s in enumerate(group):
            col = greedy[i] if greedy else sample_token(logits[i], s.unit_sampling, s.unit_gen)
            self._take_unit(s, self.unit_logits.token(col), events[i])

    def decode(self, wave: np.ndarray | None = None, **start_kwargs) -> Iterator[Event]:
        """One session from start to Done, as a stream of events."""
        state = self.start(wave, **start_kwargs)
        while not state.done:
            yield from self.step([state])[0]

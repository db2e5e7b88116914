"""OpenS2SModel: audio encoder -> adapter -> LLM -> llm2tts/llm_ln -> TTS LM (speech units).

Read top to bottom: the weight-name table, the conv adapter, the interleaving layout, the model
(audio encoding, splicing audio into the LLM input, the TTS LM input, the joint loss).

Parameter names are exactly those of the released OpenS2S checkpoint (``WEIGHT_NAMES``), so its
``from_pretrained`` directory loads with no missing or unexpected keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput

from opens2s.model.configuration import OpenS2SConfig

IGNORE_INDEX = -100

# The released checkpoint's top-level weight names and the module that owns each here. Names
# below these prefixes are the HF names of that module (e.g. llm_model.model.layers.0...).
WEIGHT_NAMES: dict[str, str] = {
    "audio_encoder_model.": "Qwen2AudioEncoder (or WhisperEncoder) over log-mel windows",
    "audio_adapter.subsampler.conv_layers.{i}.": "stride-2 Conv1d + GLU, one per conv_kernel_sizes",
    "audio_adapter.fc1.": "residual FFN in (out_dim -> adapter_inner_dim), no bias",
    "audio_adapter.fc2.": "residual FFN out (adapter_inner_dim -> out_dim), no bias",
    "audio_adapter.ln.": "LayerNorm on the adapter output (upstream Subsampler's `ln`)",
    "llm_model.": "the causal LM (AutoModelForCausalLM.from_config(llm_config))",
    "llm2tts.": "Linear llm hidden -> TTS hidden, no bias",
    "llm_ln.": "LayerNorm after llm2tts",
    "tts_lm_model.": "the TTS causal LM over speech units",
    "tts_lm_model.spk2tts.": "Linear speaker embedding -> TTS hidden, no bias",
    "tts_lm_model.spk_ln.": "LayerNorm after spk2tts",
}

# Names written by earlier versions of this project -> the released names (regex -> replacement),
# applied once when a directory is loaded (model/layout.py).
LEGACY_WEIGHT_NAMES: dict[str, str] = {r"^audio_adapter\.speech_ln\.": "audio_adapter.ln."}

AUDIO_ENCODERS = {"qwen2_audio_encoder": Qwen2AudioEncoder, "whisper": WhisperEncoder}


class Conv1dSubsampler(nn.Module):
    """Stride-2 1-D convolutions, each followed by a GLU (halves the channels)."""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int, kernel_sizes: list[int]):
        super().__init__()
        n = len(kernel_sizes)
        self.conv_layers = nn.ModuleList(
            nn.Conv1d(
                in_dim if i == 0 else mid_dim // 2,
                mid_dim if i < n - 1 else out_dim * 2,
                k,
                stride=2,
                padding=k // 2,
            )
            for i, k in enumerate(kernel_sizes)
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for ``lengths`` valid input frames."""
        for _ in self.conv_layers:
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # B x C x T
        for conv in self.conv_layers:
            x = F.glu(conv(x), dim=1)
        return x.transpose(1, 2)


class AudioAdapter(nn.Module):
    """OpenS2S's ``Subsampler``: conv subsampling to the LLM width, a residual FFN, a LayerNorm."""

    def __init__(self, in_dim: int, inner_dim: int, out_dim: int, kernel_sizes: list[int]):
        super().__init__()
        self.subsampler = Conv1dSubsampler(in_dim, 2 * in_dim, out_dim, kernel_sizes)
        self.fc1 = nn.Linear(out_dim, inner_dim, bias=False)
        self.fc2 = nn.Linear(inner_dim, out_dim, bias=False)
        self.activation = nn.GELU()
        self.ln = nn.LayerNorm(out_dim, eps=1e-5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` B x T x C encoder states -> (B x T' x out_dim, valid lengths T')."""
        x = self.subsampler(x)
        x = self.fc2(self.activation(self.fc1(x))) + x
        return self.ln(x), self.subsampler.output_lengths(lengths)


def interleave_layout(
    n_text: int, n_units: int, text_span: int, speech_span: int
) -> list[tuple[str, int, int]]:
    """The TTS LM input after the speaker slot: chunks ``("h"|"u", start, end)`` alternating
    ``text_span`` hidden states and ``speech_span`` units; when one stream ends the other follows.
    """
    chunks: list[tuple[str, int, int]] = []
    i = j = 0
    while i < n_text or j < n_units:
        if i < n_text:
            chunks.append(("h", i, min(i + text_span, n_text)))
            i = chunks[-1][2]
        if j < n_units:
            chunks.append(("u", j, min(j + speech_span, n_units)))
            j = chunks[-1][2]
    return chunks


def attach_speaker_projection(tts_lm: nn.Module, spk_emb_dim: int) -> None:
    """Give the TTS LM its speaker projection (``spk2tts`` + ``spk_ln``), the first TTS input."""
    hidden = tts_lm.config.hidden_size
    tts_lm.spk2tts = nn.Linear(spk_emb_dim, hidden, bias=False)
    tts_lm.spk_ln = nn.LayerNorm(hidden, eps=1e-5)


@dataclass
class OpenS2SOutput(ModelOutput):
    """Joint loss and its parts; ``logits`` are the LLM's, ``tts_logits`` the TTS LM's."""

    loss: torch.Tensor | None = None
    llm_loss: torch.Tensor | None = None
    tts_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    tts_logits: torch.Tensor | None = None


class OpenS2SModel(PreTrainedModel):
    """The empathetic speech-to-speech LM, state-dict compatible with released OpenS2S."""

    config_class = OpenS2SConfig
    config: OpenS2SConfig
    base_model_prefix = "omnispeech"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Qwen2AudioEncoderLayer", "Qwen3DecoderLayer", "Qwen2DecoderLayer"]

    def __init__(self, config: OpenS2SConfig):
        super().__init__(config)
        if config.lora_config:
            raise ValueError(
                "config.lora_config is set but this build has no LoRA support: merge the LoRA "
                "weights into llm_model and set lora_config to null"
            )
        enc_type = config.audio_encoder_config.model_type
        if enc_type not in AUDIO_ENCODERS:
            raise ValueError(
                f"audio_encoder_config.model_type={enc_type!r}: expected one of "
                f"{sorted(AUDIO_ENCODERS)}"
            )
        self.audio_encoder_model = AUDIO_ENCODERS[enc_type](config.audio_encoder_config)
        self.llm_model = AutoModelForCausalLM.from_config(config.llm_config)
        self.tts_lm_model = AutoModelForCausalLM.from_config(config.tts_lm_config)
        attach_speaker_projection(self.tts_lm_model, config.spk_emb_dim)
        self.audio_adapter = AudioAdapter(
            config.audio_encoder_config.d_model,
            config.adapter_inner_dim,
            config.llm_config.hidden_size,
            config.kernel_sizes,
        )
        self.llm2tts = nn.Linear(
            config.llm_config.hidden_size, config.tts_lm_config.hidden_size, bias=False
        )
        self.llm_ln = nn.LayerNorm(config.tts_lm_config.hidden_size, eps=1e-5)
        self.text_span = config.text_span
        self.speech_span = config.speech_span
        self.post_init()

    # ---------------------------------------------------------------- audio
    def encoder_output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Encoder outputs for ``frames`` valid mel frames of one window (after its pooling)."""
        lengths = torch.div(frames - 1, 2, rounding_mode="floor") + 1  # conv2, stride 2
        if isinstance(self.audio_encoder_model, Qwen2AudioEncoder):
            lengths = torch.div(lengths - 2, 2, rounding_mode="floor") + 1  # avg pool, stride 2
        return lengths

    def encode_audio(
        self, speech_values: torch.Tensor, speech_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Log-mel ``N x n_mels x Wk`` + frame mask ``N x Wk`` -> N tensors ``n_i x D``.

        ``W`` is ``config.audio_window_frames`` (3000 = 30 s for the released encoder). Each audio
        is cut into windows; windows that are all padding are skipped, the rest run through the
        encoder without a mask (as released), are concatenated per audio, and the adapter maps
        them to LLM embeddings (~6.25 per second).
        """
        window = self.config.audio_window_frames
        n, n_mels, frames = speech_values.shape
        if frames % window:
            raise ValueError(
                f"speech_values has {frames} frames: expected a multiple of {window} "
                "(log-mel padded to whole encoder windows, config.audio_window_frames)"
            )
        k = frames // window
        lengths = speech_mask.sum(-1).long()
        windows = speech_values.view(n, n_mels, k, window).permute(0, 2, 1, 3)
        starts = torch.arange(k, device=lengths.device) * window
        window_frames = (lengths[:, None] - starts[None, :]).clamp(0, window)  # N x k
        used = window_frames > 0
        used[:, 0] = True  # an empty audio still yields one window, like the released code
        enc = self.audio_encoder_model(
            windows[used].to(self.audio_encoder_model.conv1.weight.dtype)
        ).last_hidden_state  # M x window/4 x C (750 for 30 s windows)
        per_window = enc.shape[1]
        n_windows = used.sum(-1)
        out_lengths = (self.encoder_output_lengths(window_frames) * used).sum(-1)
        max_len = int(out_lengths.max())
        padded = enc.new_zeros(n, per_window * int(n_windows.max()), enc.shape[-1])
        idx = 0
        for i, w in enumerate(n_windows.tolist()):
            padded[i, : per_window * w] = enc[idx : idx + w].reshape(-1, enc.shape[-1])
            idx += w
        feats, feat_lengths = self.audio_adapter(padded[:, :max_len], out_lengths)
        return [feats[i, : int(feat_lengths[i])] for i in range(n)]

    # ---------------------------------------------------------------- LLM input
    def splice_audio(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        audio_embeds: list[torch.Tensor],
        extra: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Replace each audio placeholder id by that audio's embeddings (in order, row-major).

        Returns right-padded ``inputs_embeds``, its attention mask and the per-token tensors in
        ``extra`` (labels, token types) stretched to match (audio positions: IGNORE_INDEX / 0).
        """
        audio_id = self.config.audio_token_id
        embed = self.llm_model.get_input_embeddings()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = extra or {}
        rows, extra_rows = [], {k: [] for k in extra}
        a = 0
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids = input_ids[b][keep]
            tok = embed(ids)
            places = (ids == audio_id).nonzero().flatten().tolist()
            pieces, extra_pieces = [], {k: [] for k in extra}
            prev = 0
            for p in places + [len(ids)]:
                pieces.append(tok[prev:p])
                for key, val in extra.items():
                    extra_pieces[key].append(val[b][keep][prev:p])
                if p < len(ids):
                    if a >= len(audio_embeds):
                        raise ValueError(
                            f"input_ids hold more audio placeholders than the {len(audio_embeds)} "
                            "audio inputs given"
                        )
                    emb = audio_embeds[a].to(tok.dtype)
                    a += 1
                    pieces.append(emb)
                    for key, val in extra.items():
                        fill = IGNORE_INDEX if key == "labels" else 0
                        extra_pieces[key].append(val.new_full((emb.shape[0],), fill))
                prev = p + 1
            rows.append(torch.cat(pieces))
            for key in extra:
                extra_rows[key].append(torch.cat(extra_pieces[key]))
        if a != len(audio_embeds):
            raise ValueError(
                f"{len(audio_embeds)} audio inputs but only {a} audio placeholders in input_ids"
            )
        length = max(r.shape[0] for r in rows)
        inputs_embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
        mask = attention_mask.new_zeros(len(rows), length)
        out_extra = {
            key: extra[key].new_full((len(rows), length), IGNORE_INDEX if key == "labels" else 0)
            for key in extra
        }
        for b, r in enumerate(rows):
            inputs_embeds[b, : r.shape[0]] = r
            mask[b, : r.shape[0]] = 1
            for key in extra:
                out_extra[key][b, : r.shape[0]] = extra_rows[key][b]
        return inputs_embeds, mask, out_extra

    def llm_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kw):
        """Run the LLM body; returns (last hidden states after the final norm, logits, output)."""
        out = self.llm_model.base_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kw
        )
        hidden = out.last_hidden_state
        return hidden, self.llm_model.get_output_embeddings()(hidden), out

    # ---------------------------------------------------------------- TTS input
    def text_to_tts(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project LLM hidden states into the TTS LM (``llm2tts`` then ``llm_ln``)."""
        return self.llm_ln(self.llm2tts(hidden))

    def speaker_to_tts(self, spk_embs: torch.Tensor) -> torch.Tensor:
        """Project speaker embeddings ``S x spk_dim`` to the TTS LM's first input ``S x 1 x H``."""
        tts = self.tts_lm_model
        return tts.spk_ln(tts.spk2tts(spk_embs.to(tts.spk2tts.weight.dtype))).unsqueeze(1)

    def build_tts_inputs(
        self,
        hidden: torch.Tensor,
        token_types: torch.Tensor,
        speech_units: torch.Tensor,
        speech_units_mask: torch.Tensor,
        spk_embs: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Interleaved TTS LM input ``[speaker] + H[0:t] + U[0:s] + ...`` for each TTS span.

        Spans are the runs of token type 1 (``<|im_tts_start|>`` .. ``<|im_tts_end|>``), taken in
        row-major order and paired with the rows of ``speech_units``; labels sit on unit
        positions only.
        """
        h = self.text_to_tts(hidden)
        spk = self.speaker_to_tts(spk_embs)
        unit_embeds = self.tts_lm_model.get_input_embeddings()(speech_units)
        padded = F.pad(token_types.long().clamp(min=0), (1, 1))
        diff = padded[:, 1:] - padded[:, :-1]
        starts = (diff == 1).nonzero().tolist()
        ends = (diff == -1).nonzero().tolist()
        if len(starts) != speech_units.shape[0]:
            raise ValueError(
                f"{len(starts)} TTS spans (token type 1) but {speech_units.shape[0]} unit sequences"
            )
        rows, label_rows = [], []
        n_units = speech_units_mask.sum(-1).tolist()
        for s, ((b, start), (_, end)) in enumerate(zip(starts, ends, strict=True)):
            pieces, labels = [spk[s]], [speech_units.new_full((1,), IGNORE_INDEX)]
            layout = interleave_layout(end - start, n_units[s], self.text_span, self.speech_span)
            for kind, i, j in layout:
                if kind == "h":
                    pieces.append(h[b, start + i : start + j])
                    labels.append(speech_units.new_full((j - i,), IGNORE_INDEX))
                else:
                    pieces.append(unit_embeds[s, i:j])
                    labels.append(speech_units[s, i:j])
            rows.append(torch.cat(pieces))
            label_rows.append(torch.cat(labels))
        length = max(r.shape[0] for r in rows)
        embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
        mask = speech_units.new_zeros(len(rows), length)
        labels = speech_units.new_full((len(rows), length), IGNORE_INDEX)
        for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
            embeds[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
            labels[i, : r.shape[0]] = lab
        return embeds, mask, labels

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_types: torch.Tensor | None = None,
        speech_values: torch.Tensor | None = None,
        speech_mask: torch.Tensor | None = None,
        speech_units: torch.Tensor | None = None,
        speech_units_mask: torch.Tensor | None = None,
        spk_embs: torch.Tensor | None = None,
        **unused: object,
    ) -> OpenS2SOutput:
        """Joint loss = LLM cross-entropy (labelled text) + TTS cross-entropy (unit positions).

        A batch without audio or without units still runs every module (on a dummy input, times
        zero) so every parameter gets a gradient and ZeRO / DDP never wait on an unused one.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE_INDEX)
        if token_types is None:
            token_types = torch.zeros_like(input_ids)
        zero = torch.zeros((), device=input_ids.device)

        has_audio = speech_values is not None and speech_values.shape[0] > 0
        if has_audio:
            if speech_mask is None:
                raise ValueError("speech_values given without speech_mask (valid mel frames)")
            audio_embeds = self.encode_audio(speech_values, speech_mask)
        else:
            dummy = self.encode_audio(
                torch.zeros(
                    1,
                    self.config.audio_encoder_config.num_mel_bins,
                    self.config.audio_window_frames,
                    device=input_ids.device,
                ),
                torch.ones(1, 100, device=input_ids.device),
            )
            zero = zero + 0.0 * dummy[0].sum()
            audio_embeds = []
        inputs_embeds, mask, extra = self.splice_audio(
            input_ids, attention_mask, audio_embeds, {"labels": labels, "token_types": token_types}
        )
        hidden, logits, _ = self.llm_forward(inputs_embeds, mask)
        llm_loss = _shifted_ce(logits, extra["labels"])

        has_units = speech_units is not None and speech_units.shape[0] > 0
        if has_units:
            if spk_embs is None:
                spk_embs = hidden.new_zeros(speech_units.shape[0], self.config.spk_emb_dim)
            if speech_units_mask is None:
                speech_units_mask = torch.ones_like(speech_units)
            tts_embeds, tts_mask, tts_labels = self.build_tts_inputs(
                hidden, extra["token_types"], speech_units, speech_units_mask, spk_embs
            )
        else:
            # Dummy TTS sequence: speaker slot + first LLM state + one unit, weighted by zero.
            spk = self.speaker_to_tts(hidden.new_zeros(1, self.config.spk_emb_dim))
            unit = self.tts_lm_model.get_input_embeddings()(input_ids.new_zeros(1, 1))
            tts_embeds = torch.cat([spk, self.text_to_tts(hidden[:1, :1]), unit], dim=1)
            tts_mask = input_ids.new_ones(1, 3)
            tts_labels = input_ids.new_full((1, 3), IGNORE_INDEX)
            tts_labels[0, 2] = 0
        tts_out = self.tts_lm_model(inputs_embeds=tts_embeds, attention_mask=tts_mask)
        tts_loss = _shifted_ce(tts_out.logits, tts_labels)
        if not has_units:
            zero = zero + 0.0 * tts_loss
            tts_loss = torch.zeros_like(llm_loss)
        return OpenS2SOutput(
            loss=llm_loss + tts_loss + zero,
            llm_loss=llm_loss.detach(),
            tts_loss=tts_loss.detach(),
            logits=logits,
            tts_logits=tts_out.logits,
        )

    def component_parameters(self) -> dict[str, int]:
        """Parameter counts per component (works on the meta device: nothing is allocated)."""
        parts = {
            "audio_encoder": self.audio_encoder_model,
            "audio_adapter": self.audio_adapter,
            "llm": self.llm_model,
            "bridge": nn.ModuleList([self.llm2tts, self.llm_ln]),
            "tts_lm": self.tts_lm_model,
        }
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
        counts["total"] = sum(counts.values())
        return counts


def _shifted_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (mean over labelled positions; 0 when nothing is labelled)."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )

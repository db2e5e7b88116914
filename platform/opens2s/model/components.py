"""Assemble an OpenS2S model from separate pretrained parts, as upstream's from-scratch recipe
does: an audio encoder, a text LLM and a TTS LM over speech units, each a local HF directory.

What is kept and what starts fresh (facts from CASIA-LM/OpenS2S ``train.py`` and
``src/modeling_audio_encoder.py``; docs/model.md, "Building from components"):

- the audio encoder's weights: a Qwen2-Audio directory's ``audio_tower.*`` tensors, a Whisper
  directory's ``model.encoder.*`` (or ``encoder.*``) tensors, or a bare encoder's;
- the LLM and its tokenizer; the tokenizer gains OpenS2S's special tokens and the LLM's
  embeddings are resized to the tokenizer's length (upstream: ``resize_token_embeddings(len(
  tokenizer))`` and ``llm_config.vocab_size = len(tokenizer)``);
- the TTS LM and its ``<|audio_N|>`` tokenizer (where the units sit, what ends speech);
- fresh: the audio adapter, ``llm2tts`` + ``llm_ln`` and the TTS LM's ``spk2tts`` + ``spk_ln``
  (kept when the TTS directory already holds them).

Loading is strict: a tensor the architecture lacks, or one it needs that a directory lacks, is a
``ValueError`` naming it. Nothing is downloaded: every path is a local directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import AddedToken

from opens2s.config.audio import AudioSection
from opens2s.config.model import ComponentsSection, ModelSection
from opens2s.model.configuration import OpenS2SConfig
from opens2s.model.layout import UnitVocabulary
from opens2s.model.modeling import AUDIO_ENCODERS, AudioAdapter, OpenS2SModel
from opens2s.model.tokenizer import AUDIO_TOKEN, CHAT_TEMPLATE, SPECIAL_TOKENS

ENCODER_PREFIXES = {
    "qwen2_audio": "audio_tower.",
    "qwen2_audio_encoder": "",
    "whisper": "model.encoder.",
}
"""Where each kind of audio directory keeps its encoder's tensors (the prefix stripped)."""
_WHISPER_BARE_PREFIX = "encoder."  # a WhisperModel (no ForConditionalGeneration) saves these


def assemble_config_and_tokenizer(
    components: ComponentsSection,
    section: ModelSection | None = None,
    audio: AudioSection | None = None,
) -> tuple[OpenS2SConfig, PreTrainedTokenizerFast]:
    """The OpenS2S config and text tokenizer the parts make, without reading any weights."""
    section = section or ModelSection()
    audio = audio or AudioSection()
    encoder_config, _ = _encoder_config(Path(components.audio_encoder))
    tokenizer = _text_tokenizer(Path(components.llm))
    llm_config = _causal_lm_config(Path(components.llm), "model.components.llm")
    llm_config["vocab_size"] = len(tokenizer)
    tts_path = Path(components.tts_lm)
    tts_config = _causal_lm_config(tts_path, "model.components.tts_lm")
    vocab = UnitVocabulary.from_tts_dir(tts_path)
    config = OpenS2SConfig(
        audio_encoder_config=encoder_config,
        llm_config=llm_config,
        tts_lm_config=tts_config,
        interleave_strategy=section.interleave_strategy,
        spk_emb_dim=section.speaker_embedding_dim,
        unit_rate=audio.unit_rate,
        audio_token_id=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        **vocab.config_fields(),
    )
    return config, tokenizer


def assemble_model(
    components: ComponentsSection,
    section: ModelSection | None = None,
    audio: AudioSection | None = None,
) -> tuple[OpenS2SModel, PreTrainedTokenizerFast]:
    """(model, tokenizer) built from the parts: pretrained weights where a part has them, the
    adapter and bridges freshly initialised from ``section.seed``; float32 on CPU."""
    section = section or ModelSection()
    config, tokenizer = assemble_config_and_tokenizer(components, section, audio)
    torch.manual_seed(section.seed)  # the new embedding rows and every fresh part
    with torch.device("meta"):
        model = OpenS2SModel(config)
    model.audio_encoder_model = _load_encoder(Path(components.audio_encoder), config)
    llm = _load_causal_lm(Path(components.llm), "model.components.llm")
    llm.resize_token_embeddings(len(tokenizer))
    model.llm_model = llm
    model.tts_lm_model = _load_tts_lm(Path(components.tts_lm), config)
    model.audio_adapter = AudioAdapter(
        config.audio_encoder_config.d_model,
        config.adapter_inner_dim,
        config.llm_config.hidden_size,
        config.kernel_sizes,
    )
    model.llm2tts = nn.Linear(
        config.llm_config.hidden_size, config.tts_lm_config.hidden_size, bias=False
    )
    model.llm_ln = nn.LayerNorm(config.tts_lm_config.hidden_size, eps=1e-5)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"assembling from components left tensors unset: {left[:10]}")
    # Each part's generation settings stay the parts' own; ours are the LLM's eos ids.
    model.generation_config = llm.generation_config
    return model.float().eval(), tokenizer


# ---- the audio encoder --------------------------------------------------------------------------


def _encoder_config(path: Path) -> tuple[dict[str, Any], str]:
    """(encoder config dict, the directory's model_type) of an audio directory."""
    raw = _read_json(path / "config.json", "model.components.audio_encoder")
    kind = raw.get("model_type")
    if kind not in ENCODER_PREFIXES:
        raise ValueError(
            f"model.components.audio_encoder {path}: model_type {kind!r}; expected one of "
            f"{sorted(ENCODER_PREFIXES)} (a Qwen2-Audio, Qwen2-Audio encoder or Whisper directory)"
        )
    if kind == "qwen2_audio":
        if "audio_config" not in raw:
            raise ValueError(f"{path / 'config.json'}: a qwen2_audio config without audio_config")
        encoder = AutoConfig.for_model(
            **{**raw["audio_config"], "model_type": "qwen2_audio_encoder"}
        )
    else:
        encoder = AutoConfig.for_model(**raw)
    _check_feature_extractor(path, int(encoder.num_mel_bins))
    return encoder.to_dict(), kind


def _load_encoder(path: Path, config: OpenS2SConfig) -> nn.Module:
    _, kind = _encoder_config(path)
    tensors = _read_tensors(path, "model.components.audio_encoder")
    prefixes = [ENCODER_PREFIXES[kind]]
    if kind == "whisper":
        prefixes.append(_WHISPER_BARE_PREFIX)
    state = {}
    for prefix in prefixes:
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            break
    if not state:
        raise ValueError(
            f"model.components.audio_encoder {path}: no tensors named {' or '.join(prefixes)}* "
            f"(found e.g. {sorted(tensors)[:3]})"
        )
    encoder = AUDIO_ENCODERS[config.audio_encoder_config.model_type](config.audio_encoder_config)
    _load_strict(encoder, state, f"model.components.audio_encoder {path}")
    return encoder


def _check_feature_extractor(path: Path, n_mels: int) -> None:
    """The directory's feature extractor must compute our (Whisper's) log-mel at its size."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return
    fe = _read_json(file, "model.components.audio_encoder")
    want = {"feature_size": n_mels, "sampling_rate": 16000, "hop_length": 160, "n_fft": 400}
    wrong = {k: (fe.get(k), v) for k, v in want.items() if k in fe and fe[k] != v}
    if wrong:
        listed = ", ".join(f"{k}={got!r} (expected {exp!r})" for k, (got, exp) in wrong.items())
        raise ValueError(f"{file}: {listed}; the encoder's features must be Whisper log-mel")


# ---- the LLM and the TTS LM ---------------------------------------------------------------------


def _text_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The LLM's tokenizer with every OpenS2S special token (added when missing)."""
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"model.components.llm {path} has no tokenizer.json: the LLM directory must hold "
            "its tokenizer"
        )
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    missing = [t for t in SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    if tok.pad_token is None and "<|endoftext|>" in tok.get_vocab():
        tok.pad_token = "<|endoftext|>"
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _causal_lm_config(path: Path, field: str) -> dict[str, Any]:
    raw = _read_json(path / "config.json", field)
    if "model_type" not in raw:
        raise ValueError(f"{field} {path}: config.json has no model_type")
    return AutoConfig.for_model(**raw).to_dict()


def _load_causal_lm(path: Path, field: str) -> nn.Module:
    model, info = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, local_files_only=True, output_loading_info=True
    )
    _raise_on_problems(info, f"{field} {path}")
    return model


def _load_tts_lm(path: Path, config: OpenS2SConfig) -> nn.Module:
    """The TTS LM with its speaker projection: the directory's own when it has one (upstream's
    TTS class saves spk2tts / spk_ln), else fresh."""
    from opens2s.model.modeling import attach_speaker_projection

    field = f"model.components.tts_lm {path}"
    model, info = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, local_files_only=True, output_loading_info=True
    )
    extra = set(info.get("unexpected_keys") or [])
    speaker = {k for k in extra if k.startswith(("spk2tts.", "spk_ln."))}
    info = {**info, "unexpected_keys": sorted(extra - speaker)}
    _raise_on_problems(info, field)
    attach_speaker_projection(model, config.spk_emb_dim)
    if speaker:
        tensors = _read_tensors(path, field)
        own = {k: tensors[k] for k in speaker}
        projection = nn.ModuleDict({"spk2tts": model.spk2tts, "spk_ln": model.spk_ln})
        _load_strict(projection, own, f"{field} (spk2tts / spk_ln)")
    return model


# ---- files --------------------------------------------------------------------------------------


def _read_json(path: Path, field: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{field}: {path} does not exist (a local HF directory is needed)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{field}: {path} is not readable JSON ({e})") from e


def _read_tensors(path: Path, field: str) -> dict[str, torch.Tensor]:
    """Every tensor of a directory's safetensors files (or ``pytorch_model.bin``, read with
    ``weights_only``: a pickle never runs code)."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if files:
        tensors: dict[str, torch.Tensor] = {}
        for f in files:
            tensors.update(load_file(str(f)))
        return tensors
    legacy = path / "pytorch_model.bin"
    if legacy.is_file():
        return torch.load(str(legacy), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{field} {path}: no *.safetensors or pytorch_model.bin weights")


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = {"missing": missing, "unexpected": unexpected, "mismatched": wrong}
    _raise_on_problems(problems, what)
    module.load_state_dict(state, strict=True)


_PROBLEM_KINDS = ("missing", "unexpected", "mismatched")


def _raise_on_problems(info: dict[str, Any], what: str) -> None:
    """Raise naming every missing / unexpected / mismatched tensor (HF's ``*_keys`` or ours)."""
    problems = {}
    for kind in _PROBLEM_KINDS:
        found = info.get(kind) or info.get(f"{kind}_keys")
        if found:
            problems[kind] = sorted(str(x) for x in found)
    if problems:
        listed = "; ".join(f"{k}: {', '.join(v[:10])}" for k, v in problems.items())
        raise ValueError(f"{what} does not match its config.json ({listed})")

"""Tiny, locally built inputs of the eval tests: a model directory in the exported layout, a
JSONL eval set of espeak questions, a random-init Qwen3 judge and a random-init SER directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

QUESTIONS = (
    ("q-sad", "I failed my exam today and I feel so low.", "sad", "I am sorry, that is hard."),
    ("q-happy", "I just got the job I wanted so much!", "happy", None),
    ("q-neutral", "Can you tell me what to cook tonight?", "neutral", None),
)


def build_model_dir(out: Path, cfg, seed: int = 0) -> Path:
    """The tiny preset (random init from ``seed``) saved as an exported model dir with a unit
    tokenizer."""
    from opens2s.model import build_model, build_tokenizer
    from opens2s.model.layout import save_model_dir
    from opens2s.serving.speech_stack import demo_unit_tokenizer

    model = build_model("tiny", seed=seed, section=cfg.model, audio=cfg.audio)
    save_model_dir(model, build_tokenizer("tiny"), out)
    (out / "units").mkdir(exist_ok=True)
    shutil.copy(demo_unit_tokenizer(cfg), out / "units" / "tokenizer.npz")
    return out


def build_eval_set(folder: Path) -> Path:
    """A JSONL set: three espeak questions (one with a reference), one line whose audio file
    does not exist, one line with no audio at all."""
    from opens2s.audio.tts import EspeakTTS

    folder.mkdir(parents=True, exist_ok=True)
    tts = EspeakTTS()
    speaker = tts.speakers()[1]
    lines = []
    for item_id, text, emotion, reference in QUESTIONS:
        wave, sr = tts.synthesize(text, speaker, emotion, 1.0)
        pad = np.zeros(sr // 4, np.float32)
        sf.write(folder / f"{item_id}.wav", np.concatenate([pad, wave, pad]), sr)
        line = {"id": item_id, "audio": f"{item_id}.wav", "question": text, "emotion": emotion}
        if reference:
            line["reference"] = reference
        lines.append(line)
    lines.append({"id": "q-missing", "audio": "nowhere.wav", "emotion": "sad"})
    lines.append({"id": "q-no-audio", "question": "where is my audio?"})
    path = folder / "set.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


JUDGE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _judge_tokenizer():
    """A small byte-level BPE with Qwen's chat markup, trained on the rubric's own words."""
    from opens2s.evaluation.judge import RUBRIC
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([RUBRIC, *(q[1] for q in QUESTIONS)], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = JUDGE_TEMPLATE
    return fast


def build_judge_dir(out: Path) -> Path:
    """A random-init tiny Qwen3 causal LM with a small chat tokenizer (garbage answers)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = _judge_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=0.08,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


SER_LABELS = {0: "neu", 1: "hap", 2: "sad", 3: "ang"}


def build_ser_dir(out: Path) -> Path:
    """A random-init tiny wav2vec2 audio classifier with IEMOCAP-style labels."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        classifier_proj_size=16,
        id2label=SER_LABELS,
        label2id={v: k for k, v in SER_LABELS.items()},
    )
    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(out)
    return out

"""Text tokenizer: Qwen chat markup plus OpenS2S's audio / TTS special tokens and chat template.

Speech units are not text tokens: they live in the TTS LM's own vocabulary, as in OpenS2S.
The ``tiny`` preset's tokenizer is a byte-level BPE trained here on bundled text (no hub), so
every string encodes; the ``opens2s-8b`` tokenizer is read from a local directory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_TOKEN = "<|im_audio|>"
AUDIO_START = "<|im_audio_start|>"
AUDIO_END = "<|im_audio_end|>"
TTS_START = "<|im_tts_start|>"
TTS_END = "<|im_tts_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
SPECIAL_TOKENS = [
    PAD_TOKEN,
    IM_START,
    IM_END,
    AUDIO_TOKEN,
    AUDIO_START,
    AUDIO_END,
    TTS_START,
    TTS_END,
    THINK_START,
    THINK_END,
]
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# Qwen3 with thinking switched off: an empty think block opens every assistant turn.
THINK_OFF = f"{THINK_START}\n\n{THINK_END}\n\n"

# One template for prompts at inference; RecordEncoder builds the same layout piece by piece
# (it needs labels per piece) and a test checks both give the same ids.
CHAT_TEMPLATE = (
    # One line, no whitespace control: every newline in the output is written out as '\\n'.
    "{% if not messages or messages[0].role != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.role == 'assistant' %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for item in m.content %}"
    "{% if m.role != 'assistant' and item.audio %}<|im_audio_start|><|im_audio|><|im_audio_end|>"
    "{% endif %}"
    "{% if m.role == 'assistant' and item.speech_units %}"
    "<|im_tts_start|>{{ item.text }}<|im_tts_end|>"
    "{% else %}{{ item.text or '' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n<|im_tts_start|>' }}"
    "{% endif %}"
)

_TINY_CORPUS = Path(__file__).with_name("tokenizer_corpus.txt")
TINY_VOCAB_SIZE = 768


def build_tokenizer(
    preset: str = "tiny", path: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """The text tokenizer of a preset: ``tiny`` is trained locally; others load from ``path``."""
    if preset == "tiny":
        return _tiny_tokenizer()
    if path is None:
        raise ValueError(
            f"preset {preset!r} has no bundled tokenizer: pass path= a local tokenizer directory "
            "(the released model's, with OpenS2S special tokens); nothing is downloaded"
        )
    return load_tokenizer(path)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer directory (its ``tokenizer.json``) and check it has every OpenS2S special
    token. Read as a fast tokenizer directly: nothing consults config.json or a hub."""
    if not (Path(path) / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{path} has no tokenizer.json: expected the text tokenizer saved with the model "
            "(tokenizer.json + tokenizer_config.json, with OpenS2S's special tokens)"
        )
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    missing = [t for t in SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        raise ValueError(f"tokenizer at {path} lacks OpenS2S special tokens {missing}")
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok


@lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    # Training is deterministic and takes milliseconds; cache the result per process.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _TINY_CORPUS.read_text().splitlines()
    tok.train_from_iterator(lines, trainer=trainer)
    return tok.to_str()


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD_TOKEN, IM_END)],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 4096
    return tok

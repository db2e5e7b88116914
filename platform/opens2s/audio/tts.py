"""Controllable TTS for the corpus: speakers and emotions on espeak-ng, and CosyVoice2 instruct TTS.

A *speaker* is a named, reproducible choice of espeak-ng accent, voice variant, base pitch and rate.
An *emotion* is a prosody profile after the rule-based emotional synthesis literature (Murray &
Arnott 1993; Cahn 1990; Burkhardt & Sendlmeier 2000; Schröder 2001): pitch level, pitch range,
speaking rate, volume and pauses, each a change from neutral scaled by ``intensity``.
docs/speech.md lists the profiles and their sources.

espeak-ng runs in-process through ctypes (libespeak-ng.so.1): ~4x faster than its CLI. The
library keeps one global state whose parameters persist between calls, so every call sets all of
them, under a process-wide lock, and puts back the synthesis state that no API resets
(``_FreshState``), so that a render depends on its request alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import html
import re
import threading
import warnings
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()
ASSISTANT_SPEAKER: str = _DEFAULTS.assistant_speaker
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "fearful",
    "surprised",
    "disgusted",
)
MAX_TEXT_CHARS = 2000
MAX_INTENSITY = 2.0


class TTSError(ValueError):
    """A synthesis request that cannot be served: ``source`` names the input, ``problem`` why."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class TTSEngine(ABC):
    """A text-to-speech engine with named speakers and emotions."""

    @abstractmethod
    def synthesize(
        self, text: str, speaker: str, emotion: str = "neutral", intensity: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` as ``speaker`` with ``emotion``: ``(float32 mono wave, sample rate)``."""

    @abstractmethod
    def speakers(self) -> list[str]:
        """Names accepted as ``speaker``."""


# ---------------------------------------------------------------------------------------------
# Speakers


@dataclass(frozen=True)
class EspeakSpeaker:
    """One espeak-ng voice: accent (language voice), variant, base pitch 0-99, rate in words/min."""

    name: str
    accent: str
    variant: str
    pitch: int
    rate: int

    @property
    def voice_name(self) -> str:
        """The espeak-ng voice string, e.g. ``en-gb-scotland+f3``."""
        return f"{self.accent}+{self.variant}"


_ACCENTS = {
    "us": "en-us",
    "gb": "en",  # espeak-ng names its British voice "en" (gmw/en)
    "scot": "en-gb-scotland",
    "rp": "en-gb-x-rp",
    "carib": "en-029",
    "lanc": "en-gb-x-gbclan",
}
_MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
_FEMALE = ("f1", "f2", "f3", "f4", "f5")


def _catalog() -> dict[str, EspeakSpeaker]:
    """Every accent x variant, with base pitch and rate drawn from a hash of the name.

    The hash (crc32) makes the catalog identical on every machine and run. Base pitches leave
    headroom for the emotion profiles (espeak clamps pitch to 0-99).
    """
    out: dict[str, EspeakSpeaker] = {}
    # The assistant: a steady mid-low male US voice; low voices survive unit quantization best.
    out[ASSISTANT_SPEAKER] = EspeakSpeaker(ASSISTANT_SPEAKER, "en-us", "m3", 40, 165)
    for code, accent in _ACCENTS.items():
        for variant in _MALE + _FEMALE:
            name = f"{code}-{variant}"
            h = zlib.crc32(name.encode())
            low, high = (30, 50) if variant.startswith("m") else (45, 65)
            pitch = low + h % (high - low + 1)
            rate = 150 + (h // 97) % 36
            out[name] = EspeakSpeaker(name, accent, variant, pitch, rate)
    return out


SPEAKERS: dict[str, EspeakSpeaker] = _catalog()


# ---------------------------------------------------------------------------------------------
# Emotions


@dataclass(frozen=True)
class ProsodyProfile:
    """How an emotion changes neutral speech (at intensity 1).

    ``pitch_shift`` is added to the speaker's espeak pitch (0-99, ~1 Hz a step for a male voice);
    ``range_scale`` multiplies espeak's pitch range (50 = neutral); ``rate_scale`` multiplies words
    per minute; ``volume_scale`` multiplies amplitude (espeak volume 100 = neutral);
    ``clause_pause_ms`` is silence added after each clause (, ; : . ! ?); ``word_gap_ms`` is
    silence added between words.
    """

    pitch_shift: float = 0.0
    range_scale: float = 1.0
    rate_scale: float = 1.0
    volume_scale: float = 1.0
    clause_pause_ms: float = 0.0
    word_gap_ms: float = 0.0


NEUTRAL = ProsodyProfile()
# Directions follow Murray & Arnott (1993, Table 1) for anger, happiness, sadness, fear and disgust,
# and Cahn (1990) / Burkhardt & Sendlmeier (2000) for surprise; magnitudes are chosen within the
# ranges those rule systems report (see docs/speech.md).
PROFILES: dict[str, ProsodyProfile] = {
    "neutral": NEUTRAL,
    "happy": ProsodyProfile(14, 1.6, 1.10, 1.20, 0, 0),
    "sad": ProsodyProfile(-12, 0.45, 0.78, 0.70, 180, 30),
    "angry": ProsodyProfile(10, 1.7, 1.12, 1.45, 0, 0),
    "fearful": ProsodyProfile(20, 1.7, 1.28, 1.0, 90, 0),
    "surprised": ProsodyProfile(14, 2.0, 1.05, 1.15, 0, 0),
    "disgusted": ProsodyProfile(-24, 1.2, 0.75, 0.85, 140, 20),
}


def _scaled(profile: ProsodyProfile, intensity: float) -> ProsodyProfile:
    """Interpolate between neutral (intensity 0) and the profile (1), extrapolating up to 2."""

    def lerp(neutral: float, value: float) -> float:
        return neutral + intensity * (value - neutral)

    return ProsodyProfile(
        pitch_shift=lerp(0.0, profile.pitch_shift),
        range_scale=max(0.0, lerp(1.0, profile.range_scale)),
        rate_scale=max(0.3, lerp(1.0, profile.rate_scale)),
        volume_scale=max(0.05, lerp(1.0, profile.volume_scale)),
        clause_pause_ms=max(0.0, lerp(0.0, profile.clause_pause_ms)),
        word_gap_ms=max(0.0, lerp(0.0, profile.word_gap_ms)),
    )


# ---------------------------------------------------------------------------------------------
# libespeak-ng through ctypes

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_SSML = 0x10
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE, _PUNCTUATION, _CAPITALS, _WORDGAP = 1, 2, 3, 4, 5, 6, 7
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class _StaticsLayout:
    """Where one libespeak-ng build keeps the synthesis state that carries over between renders.

    Offsets are from the library's load base. The statics are not exported; they were found by
    disassembly (``objdump -d``): ``flutter_ix`` is the int AdvanceParameters compares with
    N_FLUTTER*64 = 0x5c00, ``cycle_count`` the int Wavegen increments at each glottal cycle,
    ``phoneme_list`` the 1001 x 40-byte array that ends where ``n_phoneme_list`` starts.
    """

    initialize: int  # offset of espeak_Initialize, to find the load base from a symbol
    flutter_ix: int
    cycle_count: int
    phoneme_list: tuple[int, int]  # [start, end)


# Keyed by the sha256 of the library file. Debian 12 libespeak-ng1 1.51+dfsg-10+deb12u2.
_LAYOUTS = {
    "3f8af2661fb818cc3a77253e13d2bd1ea720c8564a445c9e558e30b83ff8e0c2": _StaticsLayout(
        0x29B00, 0xAB6C8, 0xAB6CC, (0x96DE0, 0xA0A48)
    ),
}


class _FreshState:
    """Puts libespeak-ng's carried-over synthesis state back to its value in a fresh process.

    Without this, the same request renders a few samples longer or shorter and up to ~0.9 apart
    depending on what the process rendered before, because four things outlive a render:
    wavegen.c's pitch-flutter phase (``Flutter_ix``), its glottal cycle counter (``cycle_count``,
    which times the roughness modulation), stale ``phoneme_list`` entries past the end of the
    utterance (read as look-ahead), and libc ``rand()`` (breath noise of f2, f3, f5). Each alone
    leaves renders differing; with all four reset, every render equals the same request's first
    render in a fresh process, bit for bit. Re-initialising the library instead costs ~5 ms a
    call, about as much as the render itself; this costs microseconds.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.layout: _StaticsLayout | None = None
        self._base = 0
        self._srand = ctypes.CDLL(None).srand
        self._srand.argtypes = [ctypes.c_uint]
        initialize = ctypes.cast(lib.espeak_Initialize, ctypes.c_void_p).value or 0
        path = _mapped_file(initialize)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path else "unknown"
        self.layout = _LAYOUTS.get(digest)
        if self.layout is None:
            warnings.warn(
                f"libespeak-ng {path} (sha256 {digest}) is not a build whose statics are known "
                "(tts._LAYOUTS); renders of the same request may differ by a few samples "
                "depending on earlier renders",
                stacklevel=3,
            )
            return
        self._base = initialize - self.layout.initialize

    def reset(self) -> None:
        """Call before each espeak_Synth, under the engine lock."""
        # glibc rand() before any srand() (process-wide; nothing else here draws from it)
        self._srand(1)
        if self.layout is None:
            return
        lay, base = self.layout, self._base
        ctypes.c_int32.from_address(base + lay.flutter_ix).value = 0
        ctypes.c_int32.from_address(base + lay.cycle_count).value = 0
        start, end = lay.phoneme_list
        ctypes.memset(base + start, 0, end - start)


def _mapped_file(address: int) -> Path | None:
    """The file mapped at ``address`` in this process (Linux /proc/self/maps), if any."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high and len(fields) == 6 and fields[5].startswith("/"):
            return Path(fields[5])
    return None


class _Espeak:
    """The process's one libespeak-ng instance (the library holds global state)."""

    _instance: _Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise TTSError(
                "espeak-ng",
                f"cannot load libespeak-ng ({e}); install libespeak-ng1 (scripts/setup.sh)",
            ) from e
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT)
        if sr <= 0:
            raise TTSError("espeak-ng", f"espeak_Initialize failed (returned {sr})")
        self.lib = lib
        self.sample_rate = sr
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # kept alive: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.fresh_state = _FreshState(lib)

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Espeak()
            return cls._instance

    def _on_samples(self, wav, n: int, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def speak(self, ssml: str, voice: str, params: dict[int, int]) -> np.ndarray:
        """Render SSML with ``voice`` and every parameter set explicitly; int16 samples."""
        with self._lock:
            rc = self.lib.espeak_SetVoiceByName(voice.encode())
            if rc != 0:
                raise TTSError(voice, f"espeak-ng has no voice {voice!r} (error {rc})")
            for key, value in params.items():
                self.lib.espeak_SetParameter(key, int(value), 0)
            self.fresh_state.reset()
            self._chunks = []
            data = ssml.encode("utf-8") + b"\0"
            rc = self.lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _SSML, None, None
            )
            if rc != 0:
                raise TTSError(voice, f"espeak_Synth failed (error {rc})")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(chunks)


_CLAUSE_END = re.compile(r"([,;:.!?]+)(\s+|$)")


def _to_ssml(text: str, clause_pause_ms: int) -> str:
    """Escape text for SSML and add a break after each clause when the profile asks for one."""
    escaped = html.escape(text, quote=False)
    if clause_pause_ms > 0:
        escaped = _CLAUSE_END.sub(rf'\1<break time="{clause_pause_ms}ms"/>\2', escaped)
    return f"<speak>{escaped}</speak>"


class EspeakTTS(TTSEngine):
    """espeak-ng in-process: catalog speakers (``SPEAKERS``) x emotion profiles (``PROFILES``).

    ``extra_speakers`` adds named speakers of your own to the catalog.
    """

    def __init__(self, extra_speakers: dict[str, EspeakSpeaker] | None = None) -> None:
        self._engine = _Espeak.get()
        self._speakers = {**SPEAKERS, **(extra_speakers or {})}

    @property
    def sample_rate(self) -> int:
        """Rate of the waves ``synthesize`` returns (22,050 Hz for espeak-ng)."""
        return self._engine.sample_rate

    @property
    def reproducible(self) -> bool:
        """Whether a request renders the same samples whatever was rendered before it.

        True for the libespeak-ng builds whose carried-over state is known (``_LAYOUTS``).
        """
        return self._engine.fresh_state.layout is not None

    def speakers(self) -> list[str]:
        """Catalog names: ``assistant`` and ``<accent>-<variant>`` (e.g. ``scot-f3``)."""
        return list(self._speakers)

    def espeak_parameters(
        self, speaker: str, emotion: str = "neutral", intensity: float = 1.0
    ) -> dict[str, int]:
        """The espeak-ng settings a request maps to (pitch, range, rate, volume, pauses)."""
        spk = self._speaker(speaker)
        prof = self._profile(emotion, intensity)
        return {
            "pitch": int(np.clip(round(spk.pitch + prof.pitch_shift), 0, 99)),
            "range": int(np.clip(round(50 * prof.range_scale), 0, 100)),
            "rate": int(np.clip(round(spk.rate * prof.rate_scale), 80, 450)),
            "volume": int(np.clip(round(100 * prof.volume_scale), 0, 200)),
            "word_gap_10ms": int(round(prof.word_gap_ms / 10)),
            "clause_pause_ms": int(round(prof.clause_pause_ms)),
        }

    def synthesize(
        self, text: str, speaker: str, emotion: str = "neutral", intensity: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak ``text``: ``(float32 wave in [-1, 1], 22050)``. Raises TTSError on bad input."""
        if not isinstance(text, str) or not text.strip():
            raise TTSError("text", "empty text, nothing to speak")
        if len(text) > MAX_TEXT_CHARS:
            raise TTSError("text", f"{len(text)} characters, at most {MAX_TEXT_CHARS} per call")
        p = self.espeak_parameters(speaker, emotion, intensity)
        voice = self._speakers[speaker].voice_name
        params = {
            _RATE: p["rate"],
            _VOLUME: p["volume"],
            _PITCH: p["pitch"],
            _RANGE: p["range"],
            _PUNCTUATION: 0,
            _CAPITALS: 0,
            _WORDGAP: p["word_gap_10ms"],
        }
        pcm = self._engine.speak(_to_ssml(text, p["clause_pause_ms"]), voice, params)
        if pcm.size == 0:
            raise TTSError("text", f"espeak-ng produced no audio for {text[:60]!r}")
        return (pcm.astype(np.float32) / 32768.0), self._engine.sample_rate

    def _speaker(self, speaker: str) -> EspeakSpeaker:
        if speaker not in self._speakers:
            raise TTSError(
                "speaker", f"unknown speaker {speaker!r}; known: assistant, us-m1 ... lanc-f5"
            )
        return self._speakers[speaker]

    @staticmethod
    def _profile(emotion: str, intensity: float) -> ProsodyProfile:
        if emotion not in PROFILES:
            raise TTSError("emotion", f"unknown emotion {emotion!r}; known: {', '.join(EMOTIONS)}")
        if not (0.0 <= float(intensity) <= MAX_INTENSITY):
            raise TTSError("intensity", f"{intensity} is outside [0, {MAX_INTENSITY}]")
        return _scaled(PROFILES[emotion], float(intensity))


# ---------------------------------------------------------------------------------------------
# CosyVoice2 instruct TTS

_INSTRUCTIONS = {
    "neutral": "Speak in a calm, neutral tone.",
    "happy": "Speak happily, with a cheerful, bright voice.",
    "sad": "Speak sadly, slowly and softly.",
    "angry": "Speak angrily, with a loud, tense voice.",
    "fearful": "Speak fearfully, quickly, with a trembling voice.",
    "surprised": "Speak with surprise, with a high, rising voice.",
    "disgusted": "Speak with disgust, slowly, with a low voice.",
}


_PROMPT_RATE = 24000
"""Speaker prompts are read at CosyVoice2's output rate; its frontend takes 16 kHz from them."""


class CosyVoice2TTS(TTSEngine):
    """CosyVoice2 instruct TTS from a local model directory (``opens2s.audio.cosyvoice2``).

    ``model_dir`` is the released CosyVoice2-0.5B layout (``cosyvoice2.yaml``, ``llm.pt``,
    ``flow.pt``, ``hift.pt``, ``campplus.onnx``, ``speech_tokenizer_v2.onnx``,
    ``CosyVoice-BlankEN/``), built and loaded strictly by our own modules. ``speakers_dir`` holds
    one prompt recording per speaker (``<name>.wav``, any rate, at most 30 s): the voice is
    cloned from it. Emotion becomes a natural-language instruction (upstream's ``instruct2``
    mode); intensity adds "slightly" or "very". Each utterance is sampled with a seed derived
    from (text, speaker, emotion, intensity), so a rebuilt or resumed corpus renders the same.
    Runs on the GPU when one is visible, else on CPU (slow at the released size).
    """

    def __init__(
        self, model_dir: str | Path, speakers_dir: str | Path, *, device: str | None = None
    ):
        from opens2s.audio.cosyvoice2 import CosyVoice2Model
        from opens2s.audio.io import AudioError, load_audio

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self._model = CosyVoice2Model(model_dir, device=device)
        except (OSError, ValueError, RuntimeError) as e:
            raise TTSError(str(model_dir), str(e)) from e
        speakers_dir = Path(speakers_dir)
        prompts = sorted(speakers_dir.glob("*.wav")) if speakers_dir.is_dir() else []
        if not prompts:
            raise TTSError(str(speakers_dir), "no speaker prompt recordings (<name>.wav) found")
        self._waves: dict[str, np.ndarray] = {}
        for p in prompts:  # readable audio, or an error naming the file
            try:
                self._waves[p.stem] = load_audio(p, _PROMPT_RATE)
            except AudioError as e:
                raise TTSError(str(p), f"speaker prompt is not usable audio: {e.problem}") from e
        self._prompts: dict[str, tuple] = {}  # speaker -> the flow's prompt, made on first use

    def speakers(self) -> list[str]:
        """Names of the prompt recordings in ``speakers_dir``."""
        return list(self._waves)

    def _prompt(self, speaker: str) -> tuple:
        if speaker not in self._prompts:
            try:
                self._prompts[speaker] = self._model.prompt(self._waves[speaker], _PROMPT_RATE)
            except ValueError as e:
                raise TTSError(f"speaker prompt {speaker}.wav", str(e)) from e
        return self._prompts[speaker]

    @staticmethod
    def instruction(emotion: str, intensity: float) -> str:
        """The natural-language instruction for ``emotion`` at ``intensity``."""
        if emotion not in _INSTRUCTIONS:
            raise TTSError("emotion", f"unknown emotion {emotion!r}; known: {', '.join(EMOTIONS)}")
        text = _INSTRUCTIONS[emotion]
        if emotion != "neutral" and intensity >= 1.5:
            text = text.replace("Speak ", "Speak very ", 1)
        elif emotion != "neutral" and intensity < 0.5:
            text = text.replace("Speak ", "Speak slightly ", 1)
        return text

    def synthesize(
        self, text: str, speaker: str, emotion: str = "neutral", intensity: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` in the prompt speaker's voice, instructed with the emotion."""
        import zlib

        from opens2s.audio.cosyvoice2_frontend import CosyVoice2Error

        if not text.strip():
            raise TTSError("text", "empty text, nothing to speak")
        if speaker not in self._waves:
            raise TTSError("speaker", f"unknown speaker {speaker!r}; known: {self.speakers()}")
        instruction = self.instruction(emotion, intensity)
        seed = zlib.crc32(f"{text}\x00{speaker}\x00{emotion}\x00{intensity:.3f}".encode())
        prompt = self._prompt(speaker)
        try:
            wave = self._model.speak(text, instruction, prompt, seed=seed)
        except CosyVoice2Error as e:  # text the model cannot speak (nothing to say, no speech)
            raise TTSError("text", str(e)) from e
        return wave, int(self._model.sample_rate)


def cosyvoice_speakers_dir(cfg: AudioSection) -> Path:
    """Where the cosyvoice2 engine finds its speaker prompts (``<speaker>.wav``)."""
    if not cfg.cosyvoice_path:
        raise TTSError("audio.cosyvoice_path", "tts_engine is cosyvoice2 but no model path is set")
    if not Path(cfg.cosyvoice_path).is_dir():
        raise TTSError(cfg.cosyvoice_path, "CosyVoice2 model directory does not exist")
    return Path(cfg.cosyvoice_speakers_path or Path(cfg.cosyvoice_path) / "speakers")


def speaker_names(cfg: AudioSection | None = None) -> list[str]:
    """The speakers the configured TTS offers, without loading a model (the driver lists them)."""
    cfg = cfg or _DEFAULTS
    if cfg.tts_engine == "espeak":
        return EspeakTTS().speakers()
    where = cosyvoice_speakers_dir(cfg)
    names = sorted(p.stem for p in where.glob("*.wav")) if where.is_dir() else []
    if not names:
        raise TTSError(str(where), "no speaker prompt recordings (<name>.wav) found")
    return names


def build_tts(cfg: AudioSection | None = None, speakers_dir: str | Path | None = None) -> TTSEngine:
    """The corpus TTS the config names (``audio.tts_engine``)."""
    cfg = cfg or _DEFAULTS
    if cfg.tts_engine == "espeak":
        return EspeakTTS()
    speakers = speakers_dir or cosyvoice_speakers_dir(cfg)
    return CosyVoice2TTS(Path(str(cfg.cosyvoice_path)), speakers)

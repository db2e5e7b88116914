"""Stage 3, validation: is a script fit to be spoken? Schema, turn count, lengths, language,
characters the TTS can speak, and no emotion word (``content.EMOTION_WORDS``) in the user turns
of a lexically neutral dialogue (a minimal-pair member). Typographic characters with a plain
equivalent are normalised first (curly quotes, dashes, ellipsis); anything else unspeakable
quarantines the sample.
"""

from __future__ import annotations

import re
import unicodedata

from opens2s.config.data import ScenarioSettings, ValidationSettings
from opens2s.data.content import emotion_words_in
from opens2s.data.sample import Sample

STAGE = "validation"

_PLAIN = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": ", ",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_SPEAKABLE = re.compile(r"[A-Za-z0-9 .,!?;:'\"()%$&/\-]")
_WORD = re.compile(r"[A-Za-z0-9']+")
_ENGLISH_WORD = re.compile(r"^[A-Za-z]+(?:'[A-Za-z]+)?$")
# Function words: a real English sentence of a few words holds at least one of them.
_FUNCTION_WORDS = frozenset(
    "a an the i you he she it we they me my your our is am are was were be been do does did "
    "to of in on at for with and or but so that this not no have has had can will would "
    "what how why when there here just about it's i'm don't".split()
)


def _invisible(ch: str) -> bool:
    # Cc: control bytes (a broken or random LM writes "\x00", "\x07"); Cf: format characters
    # (zero-width space and joiners, BOM, direction marks). Whitespace is folded to a space below.
    return unicodedata.category(ch) in ("Cc", "Cf") and not ch.isspace()


def normalise_text(text: str) -> str:
    """Plain-ASCII punctuation, no control or invisible format characters, single spaces (what
    espeak-ng reads reliably)."""
    text = "".join(ch for ch in text.translate(_PLAIN) if not _invisible(ch))
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ([,.!?;:])", r"\1", text)


def problem_with_turns(
    turns: list,
    settings: ValidationSettings,
    scenarios: ScenarioSettings,
    *,
    lexically_neutral: bool = False,
) -> str | None:
    """What is wrong with a script, or None when it may be spoken. A ``lexically_neutral``
    script's user turns may hold no word of the emotion lexicon (only the voice tells)."""
    if not turns:
        return "script has no turns"
    for i, t in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if t.role != expected:
            return f"turn {i} has role {t.role!r}, expected {expected!r} (user first, alternating)"
    if turns[-1].role != "assistant":
        return "script ends with a user turn; the assistant must answer last"
    exchanges = len(turns) // 2
    if not scenarios.min_exchanges <= exchanges <= scenarios.max_exchanges:
        return (
            f"{exchanges} exchanges, expected {scenarios.min_exchanges}..{scenarios.max_exchanges}"
        )
    for i, t in enumerate(turns):
        problem = problem_with_text(t.text, settings)
        if problem:
            return f"turn {i} {problem}"
        if lexically_neutral and t.role == "user":
            named = emotion_words_in(t.text)
            if named:
                return (
                    f"lexicon: user turn {i} of a lexically neutral dialogue names an emotion "
                    f"({', '.join(named)}); only the voice may tell it"
                )
    return None


def problem_with_text(text: str, settings: ValidationSettings, *, speakable: bool = True) -> str:
    """What is wrong with one text (a turn, a continuation): characters the TTS cannot speak
    (when ``speakable``), word count, not English; "" when nothing is."""
    if speakable:
        bad = sorted(set(_SPEAKABLE.sub("", text)))
        if bad:
            return f"has characters the TTS cannot speak: {''.join(bad)!r}"
    words = _WORD.findall(text)
    if not settings.min_words_per_turn <= len(words) <= settings.max_words_per_turn:
        return (
            f"has {len(words)} words, expected {settings.min_words_per_turn}.."
            f"{settings.max_words_per_turn}"
        )
    english = sum(1 for w in words if _ENGLISH_WORD.match(w))
    if english / len(words) < settings.min_english_ratio:
        return f"is not English text ({english}/{len(words)} plain English words)"
    if len(words) >= 4 and not any(w.lower() in _FUNCTION_WORDS for w in words):
        return f"is not English text (no common English word in {len(words)} words)"
    return ""


def validate_scripts(
    samples: list[Sample], settings: ValidationSettings, scenarios: ScenarioSettings
) -> list[Sample]:
    """Normalise every live script and quarantine those that may not be spoken."""
    for s in samples:
        if not s.ok:
            continue
        for t in s.turns:
            t.text = normalise_text(t.text)
        problem = problem_with_turns(
            s.turns, settings, scenarios, lexically_neutral=s.scenario.lexically_neutral
        )
        if problem:
            s.drop(STAGE, problem)
    return samples

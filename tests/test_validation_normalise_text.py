"""normalise_text drops the control bytes and invisible format characters an LM may emit (they
would reach espeak and the manifests) and keeps the whitespace it folds and the text around."""

from __future__ import annotations

import unicodedata

import pytest
from opens2s.config.data import ValidationSettings
from opens2s.data.validation import normalise_text, problem_with_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("I am\x07 tired\x00.", "I am tired."),
        ("\x1b[31mSorry\x7f to hear that", "[31mSorry to hear that"),
        ("zero\u200bwidth and\u200d joiner\ufeff", "zerowidth and joiner"),
        ("left\u200eto\u200fright \u2066isolate\u2069", "lefttoright isolate"),
        ("tab\there\r\nnew line\x0bvertical\x0cfeed", "tab here new line vertical feed"),
        ("\u201cCurly\u201d \u2014 and\u2026", '"Curly", and...'),
    ],
)
def test_control_and_format_characters_are_dropped(raw: str, clean: str) -> None:
    assert normalise_text(raw) == clean


def test_no_control_or_format_character_survives() -> None:
    every = "".join(chr(c) for c in range(0x2100) if unicodedata.category(chr(c)) in ("Cc", "Cf"))
    out = normalise_text(f"a{every}b")
    assert out in ("ab", "a b")  # whitespace controls fold to one space
    assert not [ch for ch in out if unicodedata.category(ch) in ("Cc", "Cf")]


def test_a_text_with_a_control_byte_becomes_speakable() -> None:
    settings = ValidationSettings()
    raw = "I hear you\x07, that sounds hard."
    assert "cannot speak" in problem_with_text(raw, settings)
    assert problem_with_text(normalise_text(raw), settings) == ""

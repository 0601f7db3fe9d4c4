"""Names of language labels and scripts, for messages and reports (core of the language layer).

A study is configured with detector labels (``"ur"``, ``"hi-Latn"``); reports and errors
name them in words: :func:`language_name` (``"Urdu"``), :func:`script_name` (``"Arabic"``)
and :func:`describe_language` (``"Urdu (ur, Arabic script)"``). :func:`suggest_label` turns
what a user may have written instead of a label (``"Hindi"``, ``"HI"``, ``"hindi "``) into
the label a detector knows.

Example:
    >>> describe_language("ur")
    'Urdu (ur, Arabic script)'
    >>> suggest_label("Hindi", {"hi", "en", "und"})
    'hi'
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from types import MappingProxyType

from mmie._validation import FrozenMapping
from mmie.language.unicode import LANGUAGE_SCRIPT, SCRIPT_NAMES

__all__ = [
    "LANGUAGE_NAMES",
    "OTHER_SCRIPTS",
    "ROMANIZED_LABELS",
    "describe_language",
    "language_name",
    "script_name",
    "suggest_label",
]

LANGUAGE_NAMES: Mapping[str, str] = FrozenMapping(
    {
        # the built-in detectors' labels
        "hi": "Hindi",
        "ur": "Urdu",
        "pa": "Punjabi",
        "bn": "Bengali",
        "en": "English",
        "hi-Latn": "romanised Hindi",
        "und": "undetermined",
        # Cld2Detector's same-script candidates, and other labels the optional backends give
        "mr": "Marathi",
        "ne": "Nepali",
        "sa": "Sanskrit",
        "bh": "Bihari",
        "mai": "Maithili",
        "fa": "Persian",
        "ar": "Arabic",
        "ps": "Pashto",
        "sd": "Sindhi",
        "as": "Assamese",
        "gu": "Gujarati",
        "or": "Odia",
        "ta": "Tamil",
        "te": "Telugu",
        "kn": "Kannada",
        "ml": "Malayalam",
        "si": "Sinhala",
        "de": "German",
        "es": "Spanish",
        "fr": "French",
        "it": "Italian",
        "nl": "Dutch",
        "pt": "Portuguese",
        "ru": "Russian",
        "tr": "Turkish",
        "id": "Indonesian",
        "sw": "Swahili",
        "zh": "Chinese",
        "ja": "Japanese",
        "ko": "Korean",
    },
    doc=(
        "English names of language labels, for every label of the built-in detectors and of "
        ":class:`~mmie.Cld2Detector`'s default candidates, and for common labels of the "
        "optional backends. Labels not listed are shown as they are."
    ),
)


ROMANIZED_LABELS: Mapping[str, str] = MappingProxyType({"hi": "hi-Latn"})
"""The label of a language written in Latin letters, for the languages a built-in detector
can recognise romanised (:class:`~mmie.RomanizedHindiDetector`: Hindi). A study of another
target names its own (``languages.romanized``) or measures no romanised redistribution."""

OTHER_SCRIPTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "hi": ("Arab",),  # Hindustani written in Urdu's script
        "ur": ("Deva",),  # ... and Urdu in Hindi's
        "pa": ("Arab",),  # Punjabi in Shahmukhi (Pakistan) besides Gurmukhi
    }
)
"""Scripts other than its own that a language is commonly written in: where a model may move
the target language instead of forgetting it (a study's redistribution gate watches them)."""


def language_name(label: str) -> str:
    """The English name of a language label (``"ur"`` -> ``"Urdu"``), or the label itself.

    Args:
        label: a detector label.

    Returns:
        The name from :data:`LANGUAGE_NAMES`, else ``label`` unchanged.

    Raises:
        TypeError: ``label`` is not a string.
    """
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    return LANGUAGE_NAMES.get(label, label)


_SCRIPT_TITLES: Mapping[str, str] = MappingProxyType(
    {code: name.capitalize() for name, code in SCRIPT_NAMES.items()}
)


def script_name(code: str) -> str:
    """The name of an ISO 15924 script code (``"Arab"`` -> ``"Arabic"``), or the code itself.

    Args:
        code: a script code such as ``"Deva"``.

    Returns:
        ``"Devanagari"``, ``"Arabic"``, ``"Gurmukhi"``, ``"Bengali"`` or ``"Latin"`` for the
        scripts mmie knows, else ``code`` unchanged.
    """
    return _SCRIPT_TITLES.get(code, code)


def describe_language(label: str) -> str:
    """A label in words for messages: ``"Urdu (ur, Arabic script)"``.

    The script is the label's in :data:`mmie.language.unicode.LANGUAGE_SCRIPT`; a label with
    no known script (``"und"``, ``"fr"``) is described without one (``"French (fr)"``).

    Args:
        label: a detector label.

    Returns:
        Name, label and script.
    """
    script = LANGUAGE_SCRIPT.get(label)
    where = f", {script_name(script)} script" if script is not None else ""
    return f"{language_name(label)} ({label}{where})"


def suggest_label(value: str, labels: Collection[str]) -> str | None:
    """The label of ``labels`` a user most likely meant by ``value``, or ``None``.

    Tried in order: ``value`` with surrounding spaces stripped, matched case-insensitively to
    a label (``"HI"`` -> ``"hi"``) or to a language name (``"Hindi"`` -> ``"hi"``,
    ``"romanised hindi"`` -> ``"hi-Latn"``); then the closest label or name by
    :func:`difflib.get_close_matches` (``"urdo"`` -> ``"ur"``).

    Args:
        value: what was written.
        labels: the labels that are allowed.

    Returns:
        A member of ``labels``, or ``None`` when nothing is close.
    """
    text = value.strip().casefold()
    by_key: dict[str, str] = {}
    for label in sorted(labels):
        by_key.setdefault(label.casefold(), label)
        by_key.setdefault(language_name(label).casefold(), label)
    if text in by_key:
        return by_key[text]
    close = difflib.get_close_matches(text, list(by_key), n=1, cutoff=0.75)
    return by_key[close[0]] if close else None

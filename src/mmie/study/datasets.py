"""Text sets: the bundled multilingual data, a validating loader and leak-free splits.

mmie ships small JSONL sets written for the project by ``scripts/make_data.py`` (hand-written
vocabularies and templates; no corpus was copied). Each line is a JSON object with a
``"text"`` string:

=====================  =========================================================  ========
name                   content                                                    lines
=====================  =========================================================  ========
``hindi_train``        Hindi in Devanagari, the forget set                        496
``english_train``      English, the retain set                                    496
``hindi_eval``         held-out Hindi (evaluation, MIA non-members)               124
``english_eval``       held-out English (evaluation, MIA non-members)             124
``hindi_romanized``    Hindi in Latin letters, from training sentences            160
``hinglish``           code-mixed Hindi-English in Latin letters                  135
``urdu``               Urdu in Arabic script                                      118
``punjabi``            Punjabi in Gurmukhi, lines end with the danda ``।``        124
``bengali``            Bengali, lines end with the danda ``।``                    124
``adversarial``        prompts that ask for Hindi directly, by translation or     80
                       in disguise
=====================  =========================================================  ========

Hindi, English and romanised Hindi are rendered from the same parallel templates, so the
forget and retain sets cover the same topics. The train/eval split is made before rendering:
no evaluation sentence, nor its translation, appears in a training set. The language of each
set, as a detector label, is in :data:`BUNDLED_LANGUAGES`.

A bundled name may carry a line range, ``NAME[START:STOP]`` with Python's slice meaning
(either bound may be left out): ``"urdu[48:]"`` is every line of ``urdu`` from the 49th on,
the lines the demo model was trained on (:func:`mmie.demo_training_info`), and
``"urdu[:48]"`` the held-out ones.

Example:
    >>> from mmie.study.datasets import load_texts, split_texts
    >>> hindi = load_texts("hindi_train")
    >>> len(hindi) >= 400
    True
    >>> train, held_out = split_texts(["a", "b", "c", "d"], eval_fraction=0.25, seed=0)
    >>> sorted(train + held_out)
    ['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import json
import logging
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

from mmie._io import DuplicateKeyError, decode_utf8, strict_json_loads
from mmie._validation import FrozenMapping
from mmie.errors import DataError

__all__ = [
    "BUNDLED_LANGUAGES",
    "BUNDLED_SETS",
    "bundled_language",
    "bundled_path",
    "dedupe_texts",
    "load_texts",
    "normalize_text",
    "split_texts",
]

logger = logging.getLogger(__name__)

BUNDLED_SETS: tuple[str, ...] = (
    "hindi_train",
    "english_train",
    "hindi_eval",
    "english_eval",
    "hindi_romanized",
    "hinglish",
    "urdu",
    "punjabi",
    "bengali",
    "adversarial",
)
"""Names of the text sets shipped in ``mmie/data`` (load them with :func:`load_texts`)."""

BUNDLED_LANGUAGES: Mapping[str, str | None] = FrozenMapping(
    {
        "hindi_train": "hi",
        "english_train": "en",
        "hindi_eval": "hi",
        "english_eval": "en",
        "hindi_romanized": "hi-Latn",
        "hinglish": None,  # code-mixed Hindi and English
        "urdu": "ur",
        "punjabi": "pa",
        "bengali": "bn",
        "adversarial": None,  # instructions in English that ask for Hindi
    },
    doc=(
        "The language of each bundled set as a detector label (``None``: mixed languages). A study "
        "checks its bundled sets against its configured languages before anything is loaded."
    ),
)

_RANGE = re.compile(r"^(?P<name>[a-z_]+)\[(?P<start>[0-9]*):(?P<stop>[0-9]*)\]$")


def _bundled_range(name: str) -> tuple[str, int | None, int | None] | None:
    """``(set, start, stop)`` of ``"set[start:stop]"`` naming a bundled set, else ``None``."""
    match = _RANGE.match(name)
    if match is None or match["name"] not in BUNDLED_SETS:
        return None
    start, stop = match["start"], match["stop"]
    return match["name"], int(start) if start else None, int(stop) if stop else None


def bundled_language(name: str) -> str | None:
    """The language label of a bundled set, or of a line range of one (``"urdu[48:]"``).

    Args:
        name: a set name, possibly with a line range, or anything else (a path).

    Returns:
        Its label in :data:`BUNDLED_LANGUAGES`; ``None`` for a mixed-language set or a name
        that is not bundled.
    """
    parsed = _bundled_range(name)
    base = parsed[0] if parsed is not None else name
    return BUNDLED_LANGUAGES.get(base)


def bundled_path(name: str) -> Path:
    """Path of a bundled JSONL set.

    Args:
        name: one of :data:`BUNDLED_SETS`.

    Returns:
        The file's path inside the installed package.

    Raises:
        ValueError: ``name`` is not a bundled set.
    """
    if name not in BUNDLED_SETS:
        raise ValueError(f"name must be one of {BUNDLED_SETS}, got {name!r}")
    return Path(str(resources.files("mmie") / "data" / f"{name}.jsonl"))


def normalize_text(text: str) -> str:
    """Unicode NFC plus whitespace normalisation.

    NFC makes canonically equal strings identical (a nukta letter such as ``ज़`` can be one
    code point or two); every run of whitespace, newlines included, becomes one space, and
    leading and trailing whitespace is removed.

    Args:
        text: any string.

    Returns:
        The normalised string.

    Example:
        >>> normalize_text("  two\\n words ")
        'two words'
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def load_texts(name_or_path: str | Path, *, dedupe: bool = True) -> list[str]:
    """Load a text set: a bundled set by name, or a JSONL / plain-text file.

    JSONL files (``.jsonl``, ``.json``, or any suffix but ``.txt``) hold one JSON object per
    line with a non-empty string under ``"text"``; other keys are allowed and ignored, blank
    lines are skipped. ``.txt`` files hold one text per line. Files must be UTF-8; lines end
    at ``\\n`` (or ``\\r\\n``) only, so U+2028, U+2029, U+0085 and other Unicode line
    separators stay inside their line (as JSON allows them inside strings). Every text is
    normalised with ``normalize_text``; with ``dedupe`` the first occurrence of each text is
    kept, in file order. A bundled name with a line range (``"urdu[48:]"``) gives those lines
    of the set (the bundled sets hold no duplicate or blank line, so line ``i`` is text ``i``).

    Args:
        name_or_path: a name from :data:`BUNDLED_SETS` (optionally ``NAME[START:STOP]``) or
            a path to a file.
        dedupe: drop repeated texts (after normalisation), keeping the first.

    Returns:
        The texts, in file order.

    Raises:
        FileNotFoundError: the path does not exist (and is not a bundled name).
        DataError: the file is not UTF-8, or a line is not valid JSON (or repeats a key, or
            nests too deeply to parse), not an object, has no ``"text"``, or its text is not
            a string, is empty or holds a lone surrogate (``"\\ud800"``, which no UTF-8 text
            can contain); the message names the file and the line number.
        TypeError: ``name_or_path`` is neither a string nor a path.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(
            f"name_or_path must be a bundled set name or a path, got {type(name_or_path).__name__}"
        )
    if isinstance(name_or_path, str):
        parsed = _bundled_range(name_or_path)
        if parsed is not None:
            name, start, stop = parsed
            return load_texts(name, dedupe=dedupe)[start:stop]
    if isinstance(name_or_path, str) and name_or_path in BUNDLED_SETS:
        path = bundled_path(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no text set at {str(path)!r}; pass a file path or one of the bundled sets "
                f"{BUNDLED_SETS} (a line range of one as NAME[START:STOP], e.g. 'urdu[48:]')"
            )
    lines = _lines(decode_utf8(path.read_bytes(), path, DataError))
    if path.suffix == ".txt":
        texts = [normalize_text(line) for line in lines]
        texts = [t for t in texts if t]
    else:
        texts = _parse_jsonl(lines, path)
    return dedupe_texts(texts, source=str(path)) if dedupe else texts


def _lines(text: str) -> list[str]:
    """Lines ended by ``\\n`` or ``\\r\\n`` only (``str.splitlines`` also splits at U+2028,
    U+0085, form feeds, ...: characters that may sit inside a JSON string or a text)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse_jsonl(lines: Sequence[str], path: Path) -> list[str]:
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = strict_json_loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
        except DuplicateKeyError as exc:
            raise DataError(f"{where}: {exc}") from None
        except ValueError as exc:  # nested too deeply
            raise DataError(f"{where}: invalid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise DataError(f'{where}: expected a JSON object with a "text" key, got {line[:40]!r}')
        if "text" not in record:
            raise DataError(f'{where}: missing "text" key (keys: {sorted(record)})')
        text = record["text"]
        if not isinstance(text, str):
            raise DataError(f'{where}: "text" must be a string, got {type(text).__name__}')
        text = normalize_text(text)
        if not text:
            raise DataError(f'{where}: "text" is empty')
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])
            raise DataError(
                f'{where}: "text" holds a lone surrogate U+{code:04X} (an escape such as '
                '"\\ud800" without its pair), which is not a character'
            ) from None
        texts.append(text)
    return texts


def dedupe_texts(texts: Iterable[str], *, source: str = "texts") -> list[str]:
    """Drop repeated texts, keeping the first occurrence of each, in order.

    Args:
        texts: texts (compared exactly; normalise them first).
        source: a name for the log message.

    Returns:
        The distinct texts in order of first appearance.
    """
    items = list(texts)
    out = list(dict.fromkeys(items))
    if len(out) != len(items):
        logger.info("%s: dropped %d duplicate text(s)", source, len(items) - len(out))
    return out


def split_texts(
    texts: Sequence[str], *, eval_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split texts into training and evaluation parts that share no text.

    Texts are normalised and deduplicated first, so a text repeated in the input cannot land
    on both sides. A seeded local generator picks the evaluation texts (the global RNG is not
    touched); both parts keep the input order.

    Args:
        texts: the texts to split.
        eval_fraction: share of the distinct texts put in the evaluation part, in (0, 1);
            the evaluation part gets ``round(eval_fraction * n)`` texts, at least 1 and at
            most ``n - 1``.
        seed: seed of the split.

    Returns:
        ``(train, eval)``.

    Raises:
        TypeError: ``texts`` is a single string.
        ValueError: ``eval_fraction`` is outside (0, 1), or fewer than 2 distinct texts.

    Example:
        >>> train, held_out = split_texts(["a", "b", "b", "c"], eval_fraction=0.5, seed=1)
        >>> set(train) & set(held_out)
        set()
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    distinct = dedupe_texts((normalize_text(t) for t in texts), source="split_texts")
    distinct = [t for t in distinct if t]
    n = len(distinct)
    if n < 2:
        raise ValueError(f"texts must hold at least 2 distinct non-empty texts, got {n}")
    n_eval = min(max(round(eval_fraction * n), 1), n - 1)
    chosen = set(random.Random(seed).sample(range(n), n_eval))
    train = [t for i, t in enumerate(distinct) if i not in chosen]
    held_out = [t for i, t in enumerate(distinct) if i in chosen]
    return train, held_out

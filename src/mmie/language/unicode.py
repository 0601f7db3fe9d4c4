"""Unicode scripts of characters, texts and vocabulary tokens (core layer).

The danda ``।`` (U+0964) and double danda ``॥`` (U+0965) sit in the Devanagari block but end
Bengali and Punjabi sentences too, so they are *script-neutral*, like all digits and all
punctuation: only letters and combining marks (Unicode categories ``L*`` and ``M*``) vote for
a script. :func:`script_token_mask` applies the same rule to a tokenizer's vocabulary; the
dynamic gating processor, the ``script_mass`` metric and the detectors in :mod:`mmie.language.detectors` are
built on these functions.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import torch

__all__ = [
    "LANGUAGE_SCRIPT",
    "OTHER_SCRIPT",
    "SCRIPTS",
    "SCRIPT_LANGUAGE",
    "script_counts",
    "script_of_char",
    "script_token_mask",
    "token_bytes",
]

logger = logging.getLogger(__name__)

SCRIPTS: tuple[str, ...] = ("Deva", "Arab", "Guru", "Beng", "Latn")
"""ISO 15924 codes of the scripts the built-in detector knows."""

OTHER_SCRIPT = "Zzzz"  # ISO 15924 "uncoded script": a letter of a script not in SCRIPTS

SCRIPT_LANGUAGE: Mapping[str, str] = MappingProxyType(
    {"Deva": "hi", "Arab": "ur", "Guru": "pa", "Beng": "bn", "Latn": "en", OTHER_SCRIPT: "und"}
)
"""Label the :class:`ScriptDetector` gives to text written mostly in each script."""

LANGUAGE_SCRIPT: Mapping[str, str] = MappingProxyType(
    {
        "hi": "Deva",
        "ur": "Arab",
        "pa": "Guru",
        "bn": "Beng",
        "en": "Latn",
        "hi-Latn": "Latn",
        "mr": "Deva",
        "ne": "Deva",
    }
)
"""Script of each label the built-in detectors and :class:`~mmie.Cld2Detector`'s Devanagari
route give (accepted by :func:`script_token_mask` as a shorthand)."""

# Code point ranges (inclusive) of the supported scripts, sorted by start.
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x005A, "Latn"),
    (0x0061, 0x007A, "Latn"),
    (0x00C0, 0x024F, "Latn"),  # Latin-1 letters, Latin Extended-A/B (× and ÷ are Sm)
    (0x0600, 0x06FF, "Arab"),
    (0x0750, 0x077F, "Arab"),
    (0x08A0, 0x08FF, "Arab"),
    (0x0900, 0x097F, "Deva"),
    (0x0980, 0x09FF, "Beng"),
    (0x0A00, 0x0A7F, "Guru"),
    (0x1E00, 0x1EFF, "Latn"),  # Latin Extended Additional (IAST/ISO 15919 letters: ṭ, ṣ)
    (0x2C60, 0x2C7F, "Latn"),
    (0xA720, 0xA7FF, "Latn"),
    (0xA8E0, 0xA8FF, "Deva"),  # Devanagari Extended
    (0xAB30, 0xAB6F, "Latn"),
    (0xFB50, 0xFDFF, "Arab"),  # Arabic presentation forms A
    (0xFE70, 0xFEFF, "Arab"),  # Arabic presentation forms B
    (0xFF21, 0xFF3A, "Latn"),  # fullwidth Latin
    (0xFF41, 0xFF5A, "Latn"),
)
_STARTS = [start for start, _, _ in _RANGES]


@functools.lru_cache(maxsize=8192)
def script_of_char(ch: str) -> str | None:
    """The script a character votes for, or ``None`` if it is script-neutral.

    Only letters and combining marks (Unicode categories ``L*`` and ``M*``) belong to a
    script. Digits in any script (including Devanagari digits U+0966-U+096F), punctuation
    (including the danda U+0964 and double danda U+0965), symbols, spaces, format characters
    (ZWJ, ZWNJ) and generic combining diacritics (U+0300-U+036F) are neutral.

    Args:
        ch: a single character.

    Returns:
        An ISO 15924 code from ``SCRIPTS``, ``"Zzzz"`` for a letter of another script,
        or ``None``.

    Raises:
        TypeError: ``ch`` is not a string.
        ValueError: ``ch`` is not exactly one character.

    Example:
        >>> script_of_char("क"), script_of_char("।"), script_of_char("५"), script_of_char("ਕ")
        ('Deva', None, None, 'Guru')
    """
    if not isinstance(ch, str):
        raise TypeError(f"ch must be a str, got {type(ch).__name__}")
    if len(ch) != 1:
        raise ValueError(f"ch must be a single character, got {ch!r}")
    if unicodedata.category(ch)[0] not in "LM":
        return None
    code = ord(ch)
    if 0x0300 <= code <= 0x036F:  # combining diacritics inherit the base letter's script
        return None
    i = bisect_right(_STARTS, code) - 1
    if i >= 0 and code <= _RANGES[i][1]:
        return _RANGES[i][2]
    return OTHER_SCRIPT


def script_counts(text: str) -> dict[str, int]:
    """Count the characters of each script in a text (neutral characters are skipped).

    Args:
        text: any string.

    Returns:
        ISO 15924 code -> number of characters, for the scripts present.

    Example:
        >>> script_counts("मेरा office 42।")
        {'Deva': 4, 'Latn': 6}
    """
    counts: Counter[str] = Counter()
    for ch in text:
        script = script_of_char(ch)
        if script is not None:
            counts[script] += 1
    return dict(counts)


# --------------------------------------------------------------------------------------------
# Vocabulary masks
# --------------------------------------------------------------------------------------------

_SCRIPT_BIT = {script: 1 << i for i, script in enumerate((*SCRIPTS, OTHER_SCRIPT))}
# tokenizer -> (len(tokenizer) when computed, uint8 script bits per token id)
_TOKEN_BITS: weakref.WeakKeyDictionary[Any, tuple[int, torch.Tensor]] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=8192)
def _char_bit(ch: str) -> int:
    script = script_of_char(ch)
    return 0 if script is None else _SCRIPT_BIT[script]


def _string_bits(text: str) -> int:
    bits = 0
    for ch in text:
        bits |= _char_bit(ch)
    return bits


def _decode_each(tokenizer: Any, n: int) -> list[str]:
    """Decode every id in ``range(n)`` on its own, in one batched call."""
    ids = [[i] for i in range(n)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizers: one call into the Rust decoder
        return list(backend.decode_batch(ids, skip_special_tokens=False))
    return list(
        tokenizer.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    )


T = TypeVar("T")


def _per_tokenizer(
    store: weakref.WeakKeyDictionary[Any, tuple[int, T]], tokenizer: Any, build: Callable[[], T]
) -> T:
    """``build()``, cached in ``store`` by a weak reference to ``tokenizer`` and recomputed
    when its length changes (tokens were added); tokenizers that cannot be weakly
    referenced are not cached."""
    n = len(tokenizer)
    try:
        cached = store.get(tokenizer)
    except TypeError:  # unhashable or not weak-referenceable: no caching
        cached = None
    if cached is not None and cached[0] == n:
        return cached[1]
    value = build()
    try:
        store[tokenizer] = (n, value)
    except TypeError:
        logger.debug("tokenizer %s cannot be cached by weak reference", type(tokenizer).__name__)
    return value


def _token_script_bits(tokenizer: Any) -> torch.Tensor:
    return _per_tokenizer(_TOKEN_BITS, tokenizer, lambda: _build_script_bits(tokenizer))


def _build_script_bits(tokenizer: Any) -> torch.Tensor:
    n = len(tokenizer)
    strings = _decode_each(tokenizer, n)
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    return torch.tensor(
        [0 if i in special else _string_bits(s) for i, s in enumerate(strings)], dtype=torch.uint8
    )


# Lower-case script names accepted besides ISO 15924 codes and language labels.
SCRIPT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "devanagari": "Deva",
        "arabic": "Arab",
        "gurmukhi": "Guru",
        "bengali": "Beng",
        "latin": "Latn",
    }
)


def script_code(script: object, name: str = "script") -> str:
    """The ISO 15924 code of ``script``: a code (``"Deva"``), a lower-case script name
    (``"devanagari"``) or a language label (``"hi"``).

    Raises:
        TypeError: ``script`` is not a string.
        ValueError: it names no script mmie knows (the message lists what it accepts).
    """
    if not isinstance(script, str):
        raise TypeError(f"{name} must be a string, got {type(script).__name__}")
    code = SCRIPT_NAMES.get(script.lower(), LANGUAGE_SCRIPT.get(script, script))
    if code not in SCRIPTS:
        raise ValueError(
            f"{name} must be one of {tuple(SCRIPT_NAMES)}, an ISO 15924 code in {SCRIPTS} or "
            f"a language label in {tuple(LANGUAGE_SCRIPT)}; got {script!r}"
        )
    return code


def script_token_mask(
    tokenizer: Any, script: str, *, vocab_size: int | None = None
) -> torch.Tensor:
    """Boolean mask of the vocabulary ids whose token contains a character of ``script``.

    Every id in ``range(len(tokenizer))`` (added tokens included) is decoded on its own,
    once per tokenizer: the per-token scripts are cached by a weak reference to the
    tokenizer and recomputed only if its length changes (tokens were added). A token is
    marked if its decoded string contains at least one character that
    :func:`script_of_char` assigns to ``script``. Special tokens (``<s>``, ``<pad>``) are
    never marked.

    Byte-level tokenizers split a Devanagari character into 3 UTF-8 bytes; a token holding
    only part of a character decodes to U+FFFD and is *not* counted. With GPT-2-style
    tokenizers that learned whole-character merges, most target-script text is covered by
    whole-character tokens; with a pure byte tokenizer (no merges) the Devanagari mask is
    empty.

    Args:
        tokenizer: a Hugging Face tokenizer (fast or slow).
        script: an ISO 15924 code from ``SCRIPTS`` (``"Deva"``) or a label from
            ``LANGUAGE_SCRIPT`` (``"hi"`` means ``"Deva"``).
        vocab_size: length of the mask; pass the model's logits width when the embedding
            matrix is padded beyond ``len(tokenizer)`` (the extra ids are unmarked).

    Returns:
        A CPU ``torch.bool`` tensor ``[vocab]`` (a fresh tensor; move it to the scores'
        device once).

    Raises:
        ValueError: unknown ``script``, or ``vocab_size`` smaller than ``len(tokenizer)``.

    Example:
        >>> from mmie.testing import byte_tokenizer
        >>> int(script_token_mask(byte_tokenizer(), "Latn").sum())  # a-z and A-Z
        52
    """
    bits = _token_script_bits(tokenizer)
    mask = (bits & _SCRIPT_BIT[script_code(script)]) != 0  # [len(tokenizer)]
    if vocab_size is not None:
        if vocab_size < mask.numel():
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the tokenizer's {mask.numel()} ids"
            )
        mask = torch.cat([mask, torch.zeros(vocab_size - mask.numel(), dtype=torch.bool)])
    return mask


# ------------------------------------------------------------------ token bytes
# tokenizer -> (len(tokenizer) when computed, raw bytes per token id or None)
_TOKEN_BYTES: weakref.WeakKeyDictionary[Any, tuple[int, tuple[bytes | None, ...]]] = (
    weakref.WeakKeyDictionary()
)
# tokenizer -> {(script, prefix): (status per id, pending prefix per undecided id)}
_CLASSIFIED: weakref.WeakKeyDictionary[
    Any, dict[tuple[str, bytes], tuple[torch.Tensor, dict[int, bytes]]]
] = weakref.WeakKeyDictionary()
# tokenizer -> (len(tokenizer), ids of tokens starting with a UTF-8 continuation byte)
_CONTINUATION_IDS: weakref.WeakKeyDictionary[Any, tuple[int, list[int]]] = (
    weakref.WeakKeyDictionary()
)
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: the byte-level alphabet back to bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """Types of a fast tokenizer's decoder (nested sequences included); empty if unknown."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    kinds: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                kinds.add(node["type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(backend.to_str()).get("decoder"))
    return kinds


def token_bytes(tokenizer: Any) -> tuple[bytes | None, ...]:
    """The raw UTF-8 bytes of every vocabulary entry, ``None`` for special tokens.

    Byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2: a ``ByteLevel`` decoder) store tokens
    in GPT-2's byte-to-unicode alphabet, which is mapped back to bytes, so a token holding
    part of a multi-byte character gets exactly its bytes. SentencePiece tokenizers with
    byte fallback map ``<0xNN>`` to byte ``NN`` and ``▁`` to a space. Other tokenizers and
    added tokens fall back to the UTF-8 encoding of the decoded token; a token that then
    decodes to U+FFFD (part of a character) gets ``None``, like special tokens. Cached by a
    weak reference to the tokenizer, recomputed when its length changes.

    Args:
        tokenizer: a Hugging Face tokenizer.

    Returns:
        A tuple of length ``len(tokenizer)``.

    Example:
        >>> from mmie.testing import byte_tokenizer
        >>> tok = byte_tokenizer()
        >>> token_bytes(tok)[0xE0], token_bytes(tok)[tok.pad_token_id]
        (b'\\xe0', None)
    """
    return _per_tokenizer(_TOKEN_BYTES, tokenizer, lambda: _build_token_bytes(tokenizer))


def _build_token_bytes(tokenizer: Any) -> tuple[bytes | None, ...]:
    n = len(tokenizer)
    kinds = _decoder_kinds(tokenizer)
    byte_level = "ByteLevel" in kinds
    byte_fallback = "ByteFallback" in kinds
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    added = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    decoded: list[str] | None = None
    table = _unicode_to_byte()
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
            continue
        if i not in added:
            if byte_level and all(ch in table for ch in piece):
                out.append(bytes(table[ch] for ch in piece))
                continue
            if byte_fallback:
                match = _SP_BYTE.fullmatch(piece)
                out.append(
                    bytes([int(match.group(1), 16)])
                    if match
                    else piece.replace("\u2581", " ").encode()
                )
                continue
        if decoded is None:
            decoded = _decode_each(tokenizer, n)
        text = decoded[i]
        out.append(None if "\ufffd" in text else text.encode())
    return tuple(out)


def _utf8_length(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte starts (0: not a valid lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _first_script(data: bytes, code: str) -> tuple[int, bytes]:
    """Whether the first script-bearing character of ``data`` is of script ``code``.

    Returns ``(1, b"")`` if it is, ``(0, b"")`` if it is of another script or the bytes are
    not valid UTF-8, and ``(-1, pending)`` when ``data`` holds only script-neutral
    characters, followed by the incomplete character ``pending`` (possibly empty).
    """
    i = 0
    while i < len(data):
        size = _utf8_length(data[i])
        if size == 0:
            return 0, b""
        if i + size > len(data):
            tail = data[i:]
            if any(not 0x80 <= b <= 0xBF for b in tail[1:]):
                return 0, b""
            return -1, tail
        try:
            ch = data[i : i + size].decode("utf-8")
        except UnicodeDecodeError:
            return 0, b""
        script = script_of_char(ch)
        if script is not None:
            return (1 if script == code else 0), b""
        i += size
    return -1, b""


def _continuation_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokens whose bytes start with a UTF-8 continuation byte (cached)."""

    def build() -> list[int]:
        raw = token_bytes(tokenizer)
        return [i for i, data in enumerate(raw) if data and 0x80 <= data[0] <= 0xBF]

    return _per_tokenizer(_CONTINUATION_IDS, tokenizer, build)


def classify_tokens(
    tokenizer: Any, code: str, prefix: bytes
) -> tuple[torch.Tensor, dict[int, bytes]]:
    """For every token appended after the incomplete character ``prefix``: 1 if the first
    script-bearing character is of ``code``, 0 if of another script (or invalid UTF-8, or a
    special token: the text ends), -1 if still undecided, -2 if the token's bytes are
    unknown; and the pending incomplete character of every undecided token. Cached per
    tokenizer."""
    try:
        cache = _CLASSIFIED.setdefault(tokenizer, {})
    except TypeError:
        cache = {}
    key = (code, prefix)
    if key in cache and cache[key][0].numel() == len(tokenizer):
        return cache[key]
    raw = token_bytes(tokenizer)
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    values = [0] * len(raw)
    for i, data in enumerate(raw):
        if data is None and i not in special:
            values[i] = -2
    pending: dict[int, bytes] = {}
    # After an incomplete character only a token that starts with a continuation byte can
    # be valid UTF-8; every other token is invalid there (status 0), so skip it.
    candidates = _continuation_ids(tokenizer) if prefix else range(len(raw))
    for i in candidates:
        data = raw[i]
        if data is None:
            continue
        state, rest = _first_script(prefix + data, code)
        values[i] = state
        if state < 0:
            pending[i] = rest
    status = torch.tensor(values, dtype=torch.int8)
    cache[key] = (status, pending)
    return status, pending


# ------------------------------------------------------------------ incomplete characters
_UTF8_BOUNDS = {2: (0x80, 0x7FF), 3: (0x800, 0xFFFF), 4: (0x10000, 0x10FFFF)}


def _prefix_range(prefix: bytes) -> tuple[int, int] | None:
    """Code points ``[lo, hi]`` whose UTF-8 encoding starts with the incomplete character
    ``prefix``, or ``None`` if no valid character does (or ``prefix`` is complete or empty).
    Overlong forms, surrogates and code points above U+10FFFF are excluded, as a strict
    decoder (Python's) excludes them."""
    if not prefix:
        return None
    size = _utf8_length(prefix[0])
    if size < 2 or len(prefix) >= size or any(not 0x80 <= b <= 0xBF for b in prefix[1:]):
        return None
    value = prefix[0] & (0x7F >> size)
    for b in prefix[1:]:
        value = value << 6 | (b & 0x3F)
    missing = 6 * (size - len(prefix))
    lo, hi = value << missing, (value << missing) | ((1 << missing) - 1)
    low, high = _UTF8_BOUNDS[size]
    lo, hi = max(lo, low), min(hi, high)
    if size == 3 and hi >= 0xD800 and lo <= 0xDFFF:  # surrogates: never valid UTF-8
        if lo >= 0xD800:
            lo = 0xE000
        else:
            hi = 0xD7FF  # only a bare ED lead reaches here: U+D000-U+DFFF
    return (lo, hi) if lo <= hi else None


def utf8_tail(data: bytes) -> bytes:
    """The incomplete character at the end of ``data``: the bytes a UTF-8 decoder keeps
    pending (``b""`` when ``data`` ends on a character boundary or in invalid bytes).

    Only the last three bytes matter: a pending character starts at its lead byte, and a
    strict decoder (Python's, and the ``errors="replace"`` decoding of Hugging Face
    byte-level tokenizers) starts a new character at every byte that is not a continuation
    byte, so what precedes the lead byte cannot change the tail.

    Example:
        >>> utf8_tail("क".encode()[:2]), utf8_tail("क".encode()), utf8_tail(b"a\\xe0\\x80")
        (b'\\xe0\\xa4', b'', b'')
    """
    for j in range(len(data) - 1, max(len(data) - 4, -1), -1):
        if not 0x80 <= data[j] <= 0xBF:
            tail = data[j:]
            return tail if _prefix_range(tail) is not None else b""
    return b""


@functools.lru_cache(maxsize=4096)
def prefix_only_completes_to(prefix: bytes, code: str) -> bool:
    """Whether the incomplete character ``prefix`` can complete into a character of script
    ``code`` and into no letter of another script.

    Script-neutral completions (digits, punctuation, the danda) do not count against it: the
    Devanagari prefixes ``E0 A4`` and ``E0 A5`` (U+0900-U+097F) qualify, although ``E0 A5``
    also completes into the danda and the Devanagari digits; ``E0`` alone (U+0800-U+0FFF,
    also Bengali, Gurmukhi and others) does not, nor does an invalid prefix.

    Args:
        prefix: the bytes of an incomplete UTF-8 character (see :func:`utf8_tail`).
        code: an ISO 15924 code from ``SCRIPTS``.

    Example:
        >>> prefix_only_completes_to(b"\\xe0\\xa4", "Deva"), prefix_only_completes_to(b"\\xe0", "Deva")
        (True, False)
    """
    bounds = _prefix_range(prefix)
    if bounds is None:
        return False
    lo, hi = bounds
    has_target = any(
        script_of_char(chr(c)) == code
        for start, end, script in _RANGES
        if script == code
        for c in range(max(lo, start), min(hi, end) + 1)
    )
    if not has_target:
        return False
    return all(script_of_char(chr(c)) in (None, code) for c in range(lo, hi + 1))


# tokenizer -> {(script, pending): ban mask [len(tokenizer)]}
_BANNED: weakref.WeakKeyDictionary[Any, dict[tuple[str, bytes], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def script_ban_mask(tokenizer: Any, script: str, pending: bytes = b"") -> torch.Tensor:
    """Byte-aware mask of the tokens that would start or continue a character of ``script``.

    Token ``i`` is marked when the text gets a character of ``script`` or an incomplete
    character that can only complete into one (:func:`prefix_only_completes_to`) once its
    bytes (:func:`token_bytes`) follow ``pending``, the incomplete character at the end of
    the text so far (:func:`utf8_tail`; ``b""`` at a character boundary). That is, it is
    marked when

    * its first script-bearing character after ``pending`` is of ``script``
      (:func:`classify_tokens`, the next-character machinery of ``script_mass``), or
    * its decoded string contains a character of ``script`` (:func:`script_token_mask`;
      the characters after the first one do not depend on ``pending``), or
    * the text then ends in a prefix of ``script`` only (``E0 A4`` or ``E0 A5`` for
      Devanagari; a bare ``E0`` is shared with Bengali and Gurmukhi and is not marked).

    Special tokens are never marked. After a non-empty ``pending``, only tokens starting
    with a continuation byte can join it; every other token is marked as it is after
    ``b""`` (a decoder replaces the dangling bytes and starts afresh). Cached per tokenizer
    and ``(script, pending)``: a new ``pending`` costs one pass over the tokens that start
    with a continuation byte, the first one a pass over the vocabulary.

    Args:
        tokenizer: a Hugging Face tokenizer.
        script: a script code, name or language label (see :func:`script_code`).
        pending: the incomplete character the text ends with.

    Returns:
        A CPU ``torch.bool`` tensor ``[len(tokenizer)]``; treat it as read-only (it is
        cached).

    Raises:
        TypeError: ``pending`` is not ``bytes``.
        ValueError: unknown ``script``, or ``pending`` is not an incomplete character
            (``utf8_tail(pending) != pending``).

    Example:
        >>> from mmie.testing import byte_tokenizer
        >>> tok = byte_tokenizer()
        >>> ban = script_ban_mask(tok, "Deva", b"\\xe0")
        >>> bool(ban[0xA4]), bool(ban[0xA6]), bool(script_ban_mask(tok, "Deva")[0xE0])
        (True, False, False)
    """
    code = script_code(script)
    if not isinstance(pending, bytes):
        raise TypeError(f"pending must be bytes, got {type(pending).__name__}")
    if utf8_tail(pending) != pending:
        raise ValueError(f"pending must be an incomplete UTF-8 character, got {pending!r}")
    try:
        cache = _BANNED.setdefault(tokenizer, {})
    except TypeError:
        cache = {}
    key = (code, pending)
    cached = cache.get(key)
    if cached is not None and cached.numel() == len(tokenizer):
        return cached
    raw = token_bytes(tokenizer)
    whole = script_token_mask(tokenizer, code)
    status, _ = classify_tokens(tokenizer, code, pending)
    if not pending:
        ban = whole | (status == 1)
        for i, data in enumerate(raw):
            if data is not None and not ban[i]:
                ban[i] = prefix_only_completes_to(utf8_tail(data), code)
    else:
        ban = script_ban_mask(tokenizer, code).clone()
        for i in _continuation_ids(tokenizer):
            data = raw[i]
            assert data is not None
            ban[i] = (
                bool(status[i] == 1)
                or bool(whole[i])
                or prefix_only_completes_to(utf8_tail(pending + data), code)
            )
    cache[key] = ban
    return ban

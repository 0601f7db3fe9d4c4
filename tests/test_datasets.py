"""Bundled data and the text loader: sizes, scripts, leak-free splits, schema errors."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
from mmie.errors import DataError
from mmie.study.datasets import (
    BUNDLED_SETS,
    bundled_path,
    dedupe_texts,
    load_texts,
    normalize_text,
    split_texts,
)

ROOT = Path(__file__).resolve().parents[1]

MIN_LINES = {
    "hindi_train": 400,
    "english_train": 400,
    "hindi_eval": 100,
    "english_eval": 100,
    "hindi_romanized": 100,
    "hinglish": 100,
    "urdu": 100,
    "punjabi": 100,
    "bengali": 100,
    "adversarial": 50,
}

# Independent script checks: explicit code point ranges, written here rather than taken from
# mmie.language.detectors. A "letter" is a character of Unicode category L* or M*.
DEVANAGARI = re.compile(r"[\u0900-\u097F]")
RANGES = {
    "Deva": [(0x0900, 0x097F)],
    "Guru": [(0x0A00, 0x0A7F)],
    "Beng": [(0x0980, 0x09FF)],
    "Arab": [(0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF)],
}


def letters(text: str) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch)[0] in "LM"]


def in_script(ch: str, script: str) -> bool:
    return any(lo <= ord(ch) <= hi for lo, hi in RANGES[script])


@pytest.fixture(scope="module")
def sets() -> dict[str, list[str]]:
    return {name: load_texts(name) for name in BUNDLED_SETS}


# ------------------------------------------------------------------------------------------
# Bundled files
# ------------------------------------------------------------------------------------------


def test_bundled_names_match_files() -> None:
    shipped = {p.stem for p in (ROOT / "src" / "mmie" / "data").glob("*.jsonl")}
    assert shipped == set(BUNDLED_SETS)
    assert mmie.BUNDLED_SETS == BUNDLED_SETS


@pytest.mark.parametrize("name", BUNDLED_SETS)
def test_bundled_sizes_and_schema(name: str) -> None:
    raw = bundled_path(name).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in raw]
    assert all(set(r) == {"text"} and isinstance(r["text"], str) for r in records)
    texts = [r["text"] for r in records]
    assert len(texts) >= MIN_LINES[name]
    # Already normalised and duplicate-free on disk: loading changes nothing.
    assert load_texts(name) == texts
    assert len(set(texts)) == len(texts)


def test_total_size_is_small() -> None:
    total = sum(bundled_path(name).stat().st_size for name in BUNDLED_SETS)
    assert total < 1_000_000


@pytest.mark.parametrize("lang", ["hindi", "english"])
def test_train_and_eval_share_no_sentence(sets: dict[str, list[str]], lang: str) -> None:
    assert not set(sets[f"{lang}_train"]) & set(sets[f"{lang}_eval"])


def test_eval_translations_are_not_trained_on(sets: dict[str, list[str]]) -> None:
    # The split is per parallel combination: line i of hindi_train translates line i of
    # english_train, so a Hindi eval sentence's English translation is in english_eval.
    assert len(sets["hindi_train"]) == len(sets["english_train"])
    assert len(sets["hindi_eval"]) == len(sets["english_eval"])
    romanized = set(sets["hindi_romanized"])
    assert not romanized & set(sets["english_eval"])


def test_hindi_is_devanagari(sets: dict[str, list[str]]) -> None:
    for name in ("hindi_train", "hindi_eval"):
        for text in sets[name]:
            chars = letters(text)
            assert chars, text
            assert all(in_script(ch, "Deva") for ch in chars), text
            assert text[-1] in "।?", text


@pytest.mark.parametrize(("name", "script"), [("punjabi", "Guru"), ("bengali", "Beng")])
def test_punjabi_and_bengali_end_with_danda(
    sets: dict[str, list[str]], name: str, script: str
) -> None:
    for text in sets[name]:
        assert text.endswith("\u0964"), text
        chars = letters(text)
        assert chars, text
        assert all(in_script(ch, script) for ch in chars), text
        assert not DEVANAGARI.search(text[:-1]), text  # only the final danda is U+09xx


def test_urdu_is_arabic_script(sets: dict[str, list[str]]) -> None:
    for text in sets["urdu"]:
        chars = letters(text)
        assert chars, text
        assert all(in_script(ch, "Arab") for ch in chars), text
        assert text[-1] in "\u06d4\u061f", text  # Urdu full stop or question mark


@pytest.mark.parametrize("name", ["english_train", "english_eval", "hindi_romanized", "hinglish"])
def test_latin_sets_are_ascii(sets: dict[str, list[str]], name: str) -> None:
    for text in sets[name]:
        assert text.isascii(), text
        assert text[0].isupper(), text


def test_romanized_and_hinglish_use_hindi_function_words(sets: dict[str, list[str]]) -> None:
    function_words = {"hai", "hain", "ka", "ki", "ke", "ko", "se", "mein", "ne", "tha", "thi"}
    for name in ("hindi_romanized", "hinglish"):
        hits = [bool(function_words & set(re.findall(r"[a-z]+", t.lower()))) for t in sets[name]]
        assert sum(hits) / len(hits) > 0.9


def test_adversarial_prompts_ask_for_hindi(sets: dict[str, list[str]]) -> None:
    pattern = re.compile(r"hindi|h-i-n-d-i|h1nd1|हिंदी|नमस्ते|delhi", re.IGNORECASE)
    for text in sets["adversarial"]:
        assert pattern.search(text), text
    translations = [t for t in sets["adversarial"] if re.search("translat|अनुवाद", t, re.I)]
    assert len(translations) >= 10


def test_topics_are_varied(sets: dict[str, list[str]]) -> None:
    keywords = {
        "family": r"brother|sister|grandparents|cousin|wedding",
        "food": r"dal|halwa|samosas|tea|khichdi",
        "weather": r"rain|fog|wind|cloudy|humid",
        "travel": r"trip|sightseeing|go to",
        "school": r"exam|teacher|children about",
        "work": r"works as|office|team will meet",
        "health": r"doctor|exercise|sleep",
        "markets": r"price of|bought",
        "festivals": r"Holi|Diwali|Eid|Lohri",
        "sport": r"playing|wickets|runs|innings",
        "science": r"planet|Earth|Moon|Sun|water cycle|bones|sound|light|stars|plants",
    }
    english = sets["english_train"]
    for topic, pattern in keywords.items():
        n = sum(bool(re.search(pattern, t)) for t in english)
        assert n >= 10, topic


def test_generator_reproduces_the_shipped_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "scripts" / "make_data.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_data", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    for name in BUNDLED_SETS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == bundled_path(name).read_bytes()


# ------------------------------------------------------------------------------------------
# Loader
# ------------------------------------------------------------------------------------------


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"txt": "typo"}', 'missing "text"'),
        ('{"text": 3}', '"text" must be a string'),
        ('{"text": "   "}', '"text" is empty'),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", ['{"text": "ok"}', "", line])
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: {re.escape(message)}"):
        load_texts(path)


def test_data_error_is_a_value_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", ["{"])
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_texts(str(path))


def test_load_normalises_and_dedupes_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        [
            json.dumps({"text": "  b  two\n words "}),
            json.dumps({"text": "a", "source": "extra keys are ignored"}),
            json.dumps({"text": "b two words"}),
            json.dumps({"text": "ज\u093c"}),  # decomposed nukta letter
            json.dumps({"text": "\u095b"}),  # precomposed: NFC makes them equal
        ],
    )
    assert load_texts(path) == ["b two words", "a", "ज\u093c"]
    assert load_texts(path, dedupe=False) == [
        "b two words",
        "a",
        "b two words",
        "ज\u093c",
        "ज\u093c",
    ]


def test_load_txt_file(tmp_path: Path) -> None:
    path = write(tmp_path / "plain.txt", ["first line", "", "second  line", "first line"])
    assert load_texts(path) == ["first line", "second line"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bundled sets"):
        load_texts(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="hindi_train"):
        load_texts("no_such_set")
    with pytest.raises(TypeError, match="name_or_path"):
        load_texts(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be one of"):
        bundled_path("nope")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=30))
def test_dedupe_keeps_first_occurrences(texts: list[str]) -> None:
    expected: list[str] = []
    for t in texts:
        if t not in expected:
            expected.append(t)
    assert dedupe_texts(texts) == expected


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=" \t\nab\u00a0कि", max_size=20))
def test_normalize_is_idempotent_and_trims(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip()
    assert "  " not in once
    assert "\n" not in once


# ------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.text(alphabet="abcde ", min_size=1, max_size=4), min_size=2, max_size=40),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_is_a_partition_without_overlap(texts: list[str], fraction: float, seed: int) -> None:
    distinct = list(dict.fromkeys(" ".join(t.split()) for t in texts))
    distinct = [t for t in distinct if t]
    if len(distinct) < 2:
        with pytest.raises(ValueError, match="at least 2 distinct"):
            split_texts(texts, eval_fraction=fraction, seed=seed)
        return
    train, held_out = split_texts(texts, eval_fraction=fraction, seed=seed)
    assert not set(train) & set(held_out)
    assert sorted(train + held_out) == sorted(distinct)
    n = len(distinct)
    assert len(held_out) == min(max(round(fraction * n), 1), n - 1)
    # Order within each part follows the input; the split is a function of the seed.
    assert train == [t for t in distinct if t in set(train)]
    assert held_out == [t for t in distinct if t in set(held_out)]
    assert split_texts(texts, eval_fraction=fraction, seed=seed) == (train, held_out)


def test_split_of_bundled_hindi() -> None:
    texts = load_texts("hindi_train")
    train, held_out = split_texts(texts, eval_fraction=0.25, seed=3)
    assert len(held_out) == round(0.25 * len(texts))
    assert not set(train) & set(held_out)
    assert split_texts(texts, eval_fraction=0.25, seed=4) != (train, held_out)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        split_texts(["a", "b"], eval_fraction=fraction, seed=0)


def test_split_rejects_single_string() -> None:
    with pytest.raises(TypeError, match="single string"):
        split_texts("abc", eval_fraction=0.5, seed=0)

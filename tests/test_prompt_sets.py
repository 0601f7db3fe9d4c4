"""Prompt-set sanity and held-out checks, before any model is loaded."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.errors import ConfigError, DataError, MmieWarning
from mmie.study.config import demo_config
from mmie.study.suite import load_eval_sets


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def test_demo_sets_are_pairwise_held_out_and_well_formed():
    sets = load_eval_sets(demo_config(quick=True))
    assert set(sets.prompts) == {
        "forget",
        "english",
        "mixed.hinglish",
        "mixed.adversarial",
        "romanized.hindi_romanized",
        "related.urdu",
        "related.punjabi",
        "related.bengali",
    }
    for name, prompts in sets.prompts.items():
        assert len(set(prompts)) == len(prompts), name
    # the adversarial instructions are used whole, the others cut to their first 4 words
    assert all(len(p.split()) <= 4 for p in sets.prompts["forget"])
    assert any(len(p.split()) > 4 for p in sets.prompts["mixed.adversarial"])


def test_script_invariant_picker_texts_are_disjoint_from_the_romanised_prompts():
    config = demo_config(quick=True, sae={"picker": "script_invariant"})
    sets = load_eval_sets(config)
    from mmie.study.datasets import load_texts

    picker = set(sets.picker_texts["romanized"])
    assert len(picker) == config.data.n_forget
    prompt_sources = set(load_texts("hindi_romanized")[: config.data.n_eval])
    assert not picker & prompt_sources


def test_lines_sharing_their_opening_collapse_and_are_refused(tmp_path):
    lines = [f"In English only, summarize the following Hindi text: item {i}" for i in range(20)]
    path = _jsonl(tmp_path / "instr.jsonl", lines)
    config = demo_config(quick=True, data={"mixed": (path,)})
    with pytest.raises(DataError, match="only 1 distinct prompt"):
        load_eval_sets(config)
    # used whole, the lines are distinct prompts
    whole = demo_config(quick=True, data={"mixed": (path,), "whole_prompt_sets": (path,)})
    assert len(set(load_eval_sets(whole).prompts[f"mixed.{path}"])) == 16


def test_duplicate_prompts_warn_or_are_dropped_on_request(tmp_path):
    lines = [f"word{i % 8} same tail here {i}" for i in range(20)]  # 8 distinct 1-word prompts
    path = _jsonl(tmp_path / "dup.jsonl", lines)
    config = demo_config(
        quick=True, data={"mixed": (path,)}, generation={"prompt_words": 1, "dedupe_prompts": False}
    )
    with pytest.warns(MmieWarning) as caught:  # (1-word prompts of other sets repeat too)
        kept = load_eval_sets(config)
    assert any(f"{path}): 8 of 16 prompts are duplicates" in str(w.message) for w in caught)
    assert len(kept.prompts[f"mixed.{path}"]) == 16
    deduped = config.replace(generation={"dedupe_prompts": True})
    assert len(load_eval_sets(deduped).prompts[f"mixed.{path}"]) == 8


def test_every_pair_of_sets_is_checked_for_shared_texts(tmp_path):
    from mmie.study.datasets import load_texts

    urdu = load_texts("urdu")
    leaked = _jsonl(tmp_path / "leaked.jsonl", [*load_texts("bengali")[:10], urdu[3], *urdu[40:50]])
    config = demo_config(quick=True, data={"related": ("urdu", leaked)})
    with pytest.raises(DataError, match=r"share 1 text\(s\)"):
        load_eval_sets(config)


def test_a_copy_of_another_set_is_refused(tmp_path):
    from mmie.study.datasets import load_texts

    copy = _jsonl(tmp_path / "copy.jsonl", load_texts("hinglish"))
    config = demo_config(quick=True, data={"romanized": (copy,)})
    with pytest.raises(DataError, match="are the same texts"):
        load_eval_sets(config)


def test_a_set_listed_twice_is_refused():
    config = demo_config(quick=True, data={"related": ("urdu", "urdu")})
    with pytest.raises(DataError, match=r"\['urdu'\] are listed more than once"):
        load_eval_sets(config)


def test_no_warning_for_clean_sets():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_eval_sets(demo_config(quick=True))


def test_every_prompt_continues_into_the_text_it_was_cut_from():
    # Deduplicated prompts keep their own text's continuation (they once took the i-th text's
    # rest for the i-th surviving prompt, so 39 of 44 demo English prompts were misaligned).
    config = demo_config()
    assert config.generation.dedupe_prompts
    sets = load_eval_sets(config)
    sources = {
        "forget": sets.forget_eval[: config.data.n_eval],
        "english": sets.retain_eval[: config.data.n_eval],
    }
    for key, texts in sources.items():
        prompts, rests = sets.prompts[key], sets.continuations[key]
        assert len(prompts) == len(rests) < len(texts) or key == "forget"
        joined = {" ".join(t.split()) for t in texts}
        for prompt, rest in zip(prompts, rests):
            assert " ".join((prompt + rest).split()) in joined
    assert all(rest == "" for rest in sets.continuations["mixed.adversarial"])  # whole lines


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=6),
        min_size=1,
        max_size=8,
    ),
    gaps=st.lists(st.sampled_from([" ", "  ", "\t", " \u00a0"]), min_size=8, max_size=8),
    k=st.integers(1, 6),
)
def test_cut_gives_the_first_words_and_the_exact_rest(words, gaps, k):
    from mmie.study.suite import _cut

    text = "".join(w + g for w, g in zip(words, gaps))[: -len(gaps[len(words) - 1])]
    prompt, rest = _cut(text, k)
    assert prompt == " ".join(text.split()[:k])
    assert " ".join(text.split()[k:]) == " ".join(rest.split())
    assert text.endswith(rest)


def test_teacher_forced_sets_can_be_larger_than_the_prompt_sets():
    config = demo_config(quick=True, data={"n_eval": 16, "n_eval_texts": 40})
    sets = load_eval_sets(config)
    assert len(sets.forget_eval) == len(sets.retain_eval) == 40
    assert len(sets.prompts["forget"]) <= 16
    assert len(sets.prompts["english"]) <= 16
    with pytest.raises(ConfigError, match="n_eval_texts"):
        demo_config(quick=True, data={"n_eval": 16, "n_eval_texts": 8})

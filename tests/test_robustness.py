"""The ``robustness`` metric group: recoverability attacks inside a study and their verdict."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
from mmie.errors import ConfigError
from mmie.study.config import ATTACKS, RobustnessConfig, demo_config
from mmie.study.robustness import (
    attack_model,
    attack_sets,
    load_directions,
    recoverability,
    save_directions,
)
from mmie.study.schema import validate_report
from mmie.testing import byte_tokenizer, tiny_causal_lm


# ----------------------------------------------------------------------------- synthetic
def _result(log_ppl_before: float, log_ppl_after: float, es_before: float, es_after: float,
            mass_out: float, mass_max: float) -> dict:  # fmt: skip
    """Attack results shaped like :func:`attack_model`'s, from six numbers."""
    return {
        "relearning": {
            "log_ppl": [log_ppl_before, (log_ppl_before + log_ppl_after) / 2, log_ppl_after]
        },
        "steering": {"log_ppl_model": log_ppl_before, "log_ppl": [[log_ppl_after]]},
        "in_context": {"extraction_strength": es_before, "extraction_strength_context": es_after},
        "logit_lens": {"mass": [mass_max, mass_out]},
        "quantisation": {"log_ppl_full": log_ppl_before, "log_ppl": [log_ppl_after]},
    }


# base: knows the language; oracle: never saw it and stays far under every attack
BASE = _result(1.5, 1.4, 1.0, 1.0, 0.95, 0.96)
ORACLE = _result(9.0, 6.0, 0.0, 0.1, 0.05, 0.4)


def test_a_model_that_is_the_base_is_hidden_and_the_oracle_is_removed():
    judged = recoverability(
        BASE, {"oracle": ORACLE}, {"copy": BASE, "reference.oracle": ORACLE}, margin=0.25
    )
    assert judged["reference"] == "oracle"
    copy = judged["models"]["copy"]
    assert copy["verdict"] == "hidden"
    assert all(a["closeness"] == pytest.approx(0.0) for a in copy["attacks"].values())
    oracle = judged["models"]["reference.oracle"]
    assert oracle["verdict"] == "removed"
    assert all(a["closeness"] == pytest.approx(1.0) for a in oracle["attacks"].values())


def test_the_verdict_names_the_attack_that_breaks_removal():
    # like the oracle before every attack, but relearning brings it back to the base
    model = json.loads(json.dumps(ORACLE))
    model["relearning"]["log_ppl"] = [9.0, 4.0, 1.45]
    judged = recoverability(BASE, {"oracle": ORACLE}, {"arm": model}, margin=0.25)["models"]["arm"]
    assert judged["verdict"] == "hidden"
    assert judged["reason"].startswith("relearning brings it to")
    rel = judged["attacks"]["relearning"]
    assert rel["closeness_before"] == pytest.approx(1.0)
    assert rel["closeness"] == pytest.approx((1.45 - 1.4) / (6.0 - 1.4))
    assert {a for a, v in judged["attacks"].items() if v["status"] == "removed"} == set(ATTACKS) - {
        "relearning"
    }


def test_a_filter_only_model_is_hidden_by_every_teacher_forced_attack():
    """An output filter (ES 0 on generation, the base model's weights under it)."""
    model = json.loads(json.dumps(BASE))
    model["in_context"] = {"extraction_strength": 0.0, "extraction_strength_context": 0.0}
    judged = recoverability(BASE, {"oracle": ORACLE}, {"filter": model}, margin=0.25)
    statuses = {a: v["status"] for a, v in judged["models"]["filter"]["attacks"].items()}
    assert statuses["in_context"] == "removed"
    assert {statuses[a] for a in ("relearning", "steering", "logit_lens", "quantisation")} == {
        "hidden"
    }
    assert judged["models"]["filter"]["verdict"] == "hidden"


def test_without_a_reference_nothing_is_removed():
    judged = recoverability(BASE, {}, {"arm": ORACLE}, margin=0.25)
    assert judged["reference"] is None
    assert judged["models"]["arm"]["verdict"] == "not evaluated"
    assert "no reference model" in judged["models"]["arm"]["reason"]
    # the retrained model is the reference when there is no oracle
    assert recoverability(BASE, {"retrain": ORACLE}, {}, margin=0.25)["reference"] == "retrain"
    assert (
        recoverability(BASE, {"retrain": BASE, "oracle": ORACLE}, {}, margin=0.25)["reference"]
        == "oracle"
    )


def test_not_applicable_errors_and_indistinguishable_attacks_are_not_judged():
    model = json.loads(json.dumps(ORACLE))
    model["quantisation"] = {"not_applicable": "hooks only"}
    model["steering"] = {"error": "IncompatibleModelError: no final norm"}
    close = json.loads(json.dumps(ORACLE))
    close["logit_lens"] = {"mass": [0.96, 0.93]}  # the oracle reads like the base: gap 0.03
    judged = recoverability(BASE, {"oracle": close}, {"arm": model}, margin=0.25)["models"]["arm"]
    status = {a: v["status"] for a, v in judged["attacks"].items()}
    assert status == {
        "relearning": "removed",
        "steering": "not evaluated",
        "in_context": "removed",
        "logit_lens": "not evaluated",
        "quantisation": "not applicable",
    }
    assert "no final norm" in judged["attacks"]["steering"]["reason"]
    assert "too close" in judged["attacks"]["logit_lens"]["reason"]
    assert judged["verdict"] == "removed"
    nothing = {a: {"error": "x"} for a in ATTACKS}
    verdict = recoverability(BASE, {"oracle": ORACLE}, {"arm": nothing}, margin=0.25)
    assert verdict["models"]["arm"]["verdict"] == "not evaluated"


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(0.5, 3.0),
    gap=st.floats(0.5, 8.0),
    t=st.floats(-0.5, 1.5),
    margin=st.floats(0.05, 0.5),
)
def test_relearning_closeness_is_the_fraction_of_the_gap(base, gap, t, margin):
    """A model ``t`` of the way from the base to the oracle after the attack: closeness is
    ``t`` whatever the scale, and it is removed exactly when ``t >= 1 - margin``."""
    b = {"relearning": {"log_ppl": [base, base]}}
    r = {"relearning": {"log_ppl": [base + 2 * gap, base + gap]}}
    m = {"relearning": {"log_ppl": [base + 2 * gap, base + t * gap]}}
    out = recoverability(b, {"oracle": r}, {"m": m}, margin=margin, attacks=("relearning",))
    judged = out["models"]["m"]["attacks"]["relearning"]
    assert judged["closeness"] == pytest.approx(t, abs=1e-9)
    if abs(t - (1 - margin)) > 1e-9:
        assert (judged["status"] == "removed") == (t >= 1 - margin)
        assert out["models"]["m"]["verdict"] == ("removed" if t >= 1 - margin else "hidden")


# ----------------------------------------------------------------------------- config
def test_robustness_config_validates():
    RobustnessConfig()  # defaults are valid
    for kwargs, field in [
        ({"attacks": ()}, "attacks"),
        ({"attacks": ("relearning", "jailbreak")}, r"attacks\[1\]"),
        ({"attacks": ("steering", "steering")}, "attacks"),
        ({"relearn_steps": (0, 5, 5)}, "relearn_steps"),
        ({"relearn_steps": ()}, "relearn_steps"),
        ({"steering_scales": (0.0,)}, "steering_scales"),
        ({"in_context_k": 17}, "in_context_k"),
        ({"quantisation_bits": (1,)}, "quantisation_bits"),
        ({"margin": 1.0}, "margin"),
        ({"n_texts": 0}, "n_texts"),
    ]:
        with pytest.raises(ConfigError, match=field):
            RobustnessConfig(**kwargs)


def test_a_study_with_robustness_needs_held_out_target_texts():
    with pytest.raises(ConfigError, match=r"robustness\.relearn"):
        demo_config(robustness={"relearn": ""})
    with pytest.raises(ConfigError, match="only the demo model"):
        demo_config(model="org/model", robustness={"relearn": "demo:relearn"})
    # attacks that need no texts run without them
    cfg = demo_config(robustness={"relearn": "", "attacks": ("logit_lens", "quantisation")})
    assert not cfg.robustness.needs_texts
    # without the group nothing is asked for
    demo_config(metrics=("forget_es",), robustness={"relearn": ""})


def test_relearning_texts_must_be_held_out(tmp_path):
    from mmie.errors import DataError
    from mmie.study.suite import load_eval_sets

    cfg = demo_config(quick=True)
    sets = load_eval_sets(cfg)
    assert len(sets.relearn_texts) == cfg.robustness.n_relearn
    leaked = tmp_path / "leaked.jsonl"
    lines = [sets.forget_eval[0], *sets.relearn_texts[1:]]
    leaked.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines), encoding="utf-8")
    with pytest.raises(DataError, match=r"robustness\.relearn"):
        load_eval_sets(demo_config(quick=True, robustness={"relearn": str(leaked)}))
    texts, prompts = attack_sets(sets, cfg)
    assert len(texts) == min(cfg.robustness.n_texts, len(sets.forget_eval))
    assert set(texts) <= set(sets.forget_eval)
    assert len(prompts) == cfg.robustness.n_prompts


def test_directions_round_trip(tmp_path):
    directions = {2: torch.randn(8), 0: torch.randn(8)}
    path = tmp_path / "d.safetensors"
    save_directions(directions, path)
    loaded = load_directions(path)
    assert sorted(loaded) == [0, 2]
    for k, v in directions.items():
        assert torch.equal(loaded[k], v)


# ----------------------------------------------------------------------------- on a model
def test_attack_model_records_what_it_cannot_run():
    model, tok = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0), byte_tokenizer()
    cfg = demo_config(
        quick=True,
        robustness={
            "attacks": ("steering", "logit_lens", "quantisation"),
            "n_texts": 4,
            "n_prompts": 2,
        },
    )
    from mmie.study.suite import load_eval_sets

    sets = load_eval_sets(cfg)
    out = attack_model(
        model, tok, sets, cfg, layers=[0, 1], directions=None, kind="sae_gate+dynamic_gate"
    )
    assert out["steering"] == {"error": "no steering directions were fitted"}
    assert "leaves the base model's weights unchanged" in out["quantisation"]["not_applicable"]
    # a byte-level vocabulary has no token of the script: recorded, not guessed
    assert "byte-level vocabulary" in out["logit_lens"]["error"]
    assert set(out["seconds"]) == {"logit_lens"}
    lora = attack_model(model, tok, sets, cfg, layers=[0], directions=None, kind="lora+sae_gate")
    assert "log_ppl" in lora["quantisation"]


def test_an_output_filter_on_the_demo_model_is_hidden_and_the_oracle_removed():
    """A control that must fail: banning the target script at decoding removes it from the
    output, but the weights still hold it, so the teacher-forced attacks give it away."""
    from mmie.edits.controls import ScriptBanProcessor
    from mmie.study.demo import load_demo_model
    from mmie.study.suite import load_eval_sets

    cfg = demo_config(
        quick=True,
        robustness={
            "relearn_steps": (0, 5),
            "steering_scales": (2.0,),
            "in_context_k": 1,
            "n_texts": 16,
            "n_prompts": 4,
        },
    )
    sets = load_eval_sets(cfg)
    base, tok = load_demo_model()
    layers = [1]
    directions = mmie.steering_directions(
        base, tok, sets.relearn_texts, sets.retain_train[: len(sets.relearn_texts)], layers=layers
    )
    results = {"base": attack_model(base, tok, sets, cfg, layers=layers, directions=directions)}
    ban = ScriptBanProcessor(tok, "Deva")
    results["filter"] = attack_model(
        base, tok, sets, cfg, layers=layers, directions=directions, kind="control.script_ban",
        logits_processors=[ban],
    )  # fmt: skip
    oracle, _ = load_demo_model("oracle")
    results["reference.oracle"] = attack_model(
        oracle, tok, sets, cfg, layers=layers, directions=directions
    )
    judged = recoverability(
        results["base"],
        {"oracle": results["reference.oracle"]},
        {"filter": results["filter"], "reference.oracle": results["reference.oracle"]},
        margin=0.25,
    )["models"]
    assert judged["filter"]["verdict"] == "hidden"
    assert judged["filter"]["attacks"]["relearning"]["closeness"] == pytest.approx(0.0, abs=0.05)
    assert judged["filter"]["attacks"]["quantisation"]["status"] == "not applicable"
    assert judged["reference.oracle"]["verdict"] == "removed"
    # the filter really does remove the script from what is generated
    assert results["filter"]["in_context"]["extraction_strength"] < 0.1
    assert results["base"]["in_context"]["extraction_strength"] > 0.9


# ----------------------------------------------------------------------------- in a study
@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("robust")
    model = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0)
    oracle_dir = tmp / "oracle"
    tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=1).save_pretrained(oracle_dir)
    byte_tokenizer().save_pretrained(oracle_dir)
    relearn = tmp / "relearn.jsonl"
    texts = mmie.study.demo.demo_relearn_texts()[:6]
    relearn.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    cfg = demo_config(
        model="tiny-llama",
        seeds=(0,),
        output_dir=str(tmp / "out"),
        data={"n_forget": 6, "n_retain": 6, "n_eval": 4, "max_length": 256, "batch_size": 8},
        selection={"n_layers": 1, "stability_seeds": 2, "n_texts": 6},
        sae={
            "steps": 10,
            "k": 4,
            "n_features": 4,
            "d_sae_multiple": 2,
            "max_retain_frequency": 1.0,
        },
        generation={"max_new_tokens": 6, "batch_size": 8},
        n_boot=200,
        gates={"n_permutations": 200},
        plots=False,
        arms=[{"kind": "lora", "steps": 4, "batch_size": 4}, {"kind": "sae_gate"}],
        metrics=("forget_es", "retain_ppl", "forget_ppl", "robustness"),
        references={"oracle": str(oracle_dir), "retrain": ""},
        robustness={
            "relearn": str(relearn),
            "n_relearn": 6,
            "relearn_steps": (0, 2),
            "steering_scales": (1.0,),
            "in_context_k": 1,
            "n_texts": 4,
            "n_prompts": 2,
            "batch_size": 4,
        },
    )
    result = mmie.run_experiment(cfg, model=model, tokenizer=byte_tokenizer(), show_progress=False)
    return cfg, result


def test_a_study_attacks_base_references_and_arms(robust_run):
    cfg, result = robust_run
    assert result.ok
    data = result.report.data
    validate_report(data)
    recover = data["recoverability"]
    assert recover["reference"] == "oracle"
    assert recover["attacks"] == list(ATTACKS)
    assert set(recover["results"]) == {"base", "reference.oracle", "lora", "sae_gate"}
    assert set(recover["arms"]) == {"lora", "sae_gate"}  # controls are not attacked by default
    for arm in recover["arms"].values():
        assert arm["verdict"] in ("removed", "hidden", "not evaluated")
        assert arm["reason"]
        assert set(arm["seeds"]) == {"0"}
    assert recover["results"]["lora"]["quantisation"]["merged_adapter"] is True
    assert "not_applicable" in recover["results"]["sae_gate"]["quantisation"]
    assert recover["results"]["base"]["relearning"]["steps"] == [0, 2]
    # every model is attacked with the same held-out texts and seed
    seeds = {r["relearning"]["seed"] for r in recover["results"].values()}
    assert seeds == {cfg.robustness.seed}
    md = (result.output_dir / "report.md").read_text(encoding="utf-8")
    assert "## Recoverability" in md
    assert "Relearning curves" in md
    assert "| recoverability |" in md or "recoverability" in md.split("## Decisions")[1]
    assert (result.output_dir / "artifacts").is_dir()
    assert list(result.output_dir.glob("artifacts/*/steering_directions.safetensors"))


def test_a_resumed_study_does_not_attack_again(robust_run, caplog):
    cfg, first = robust_run
    model = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0)
    with caplog.at_level("INFO", logger="mmie"):
        again = mmie.run_experiment(
            cfg, model=model, tokenizer=byte_tokenizer(), show_progress=False
        )
    assert again.computed == ()
    assert not [r for r in caplog.records if "attack:" in r.getMessage()]
    assert again.report.data["recoverability"] == first.report.data["recoverability"]


def test_without_a_reference_the_report_says_removal_cannot_be_claimed(robust_run, tmp_path):
    cfg, _ = robust_run
    cfg = cfg.replace(
        output_dir=str(tmp_path),
        references={"oracle": "", "retrain": ""},
        robustness={"attacks": ("quantisation",)},
        arms=cfg.arms[1:],
    )
    model = tiny_causal_lm("llama", hidden_size=32, num_layers=2, seed=0)
    result = mmie.run_experiment(cfg, model=model, tokenizer=byte_tokenizer(), show_progress=False)
    recover = result.report.data["recoverability"]
    assert recover["reference"] is None
    assert {a["verdict"] for a in recover["arms"].values()} == {"not evaluated"}
    md = (result.output_dir / "report.md").read_text(encoding="utf-8")
    assert "removal cannot be claimed" in md
    assert math.isfinite(recover["results"]["base"]["quantisation"]["log_ppl"][-1])
    assert "not_applicable" in recover["results"]["sae_gate"]["quantisation"]


def test_the_recoverability_figure_is_drawn(robust_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, result = robust_run
    files = {f.name: f for f in mmie.plot_report(result.report, tmp_path)}
    assert "recoverability.png" in files
    assert files["recoverability.png"].stat().st_size > 1000
    from mmie.study.plots import _plot_recoverability, _pyplot

    nothing = {"base": {"relearning": {"error": "x"}, "logit_lens": {"error": "y"}}}
    assert _plot_recoverability(_pyplot(), nothing, tmp_path / "none.png") is None

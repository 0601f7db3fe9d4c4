"""The Markdown rendering of a report: tables with intervals, gate verdicts and reasons.

:func:`render_markdown` turns a report document into ``report.md``; the label table and
number formatting here are shared with the summary text and the plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmie.study.decisions import GATES

__all__ = ["LABELS", "code", "escape", "fmt", "fmt_ci", "fmt_delta", "label", "render_markdown"]

# Record key -> (label, better direction) for tables; unknown keys are shown as they are.
LABELS: dict[str, tuple[str, str]] = {
    "forget_es": ("forget ES (greedy, held-out target prompts)", "↓"),
    "forget_share": ("target-script share of forget outputs", "↓"),
    "forget_any": ("forget outputs with any target text", "↓"),
    "forget_empty": ("empty forget outputs", "→base"),
    "forget_degenerate": ("empty/degenerate forget outputs", "→base"),
    "forget_sampled": ("target-dominated samples (of N per prompt)", "↓"),
    "forget_sampled_worst": ("worst-of-N target share", "↓"),
    "forget_sampled_empty": ("samples without a letter", "→base"),
    "forget_script_mass": ("P(next letter is target script)", "↓"),
    "forget_ppl": ("forget perplexity", "↑"),
    "forget_romanized_es": ("romanised-target ES on forget prompts", "↓"),
    "mia_auc": ("MIA AUC (loss attack)", "→ref"),
    "retain_ppl": ("retain perplexity", "↓"),
    "english_degenerate": ("empty/degenerate English outputs", "↓"),
    "english_share": ("target-script share of English outputs", "↓"),
    "english_any": ("English outputs with any target text", "↓"),
    "english_fluency": ("base NLL of English outputs (nats/token)", "↓"),
}


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def fmt_ci(value: float | None, ci: Mapping[str, Any] | None) -> str:
    if ci is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci['low'])}, {fmt(ci['high'])}]"


def fmt_delta(delta: Mapping[str, Any]) -> str:
    """A paired change: ``+0.12 [..]``, or ``×1.03 [..]`` for perplexity (log-ratio) rows."""
    if delta.get("scale") != "log_ratio":
        return fmt_ci(delta["mean"], delta["ci"])
    ci = delta["ci"]
    mean = delta["mean"]
    text = "—" if mean is None else f"×{math.exp(mean):.3f}"
    if ci is not None:
        text += f" [×{math.exp(ci['low']):.3f}, ×{math.exp(ci['high']):.3f}]"
    return text


# ----------------------------------------------------------------------------- markdown
def label(key: str) -> str:
    """A readable row label of a record key, with the direction that is better."""
    if key in LABELS:
        text, direction = LABELS[key]
        return f"{text} {direction}"
    head, _, rest = key.partition(".")
    if head == "related_ppl":
        return f"{rest} perplexity ↓"
    if head == "related_es":
        return f"target ES on {rest} prompts ↓"
    if head == "mixed_es":
        return f"target ES on {rest} prompts ↓"
    if head == "romanized_es":
        return f"romanised-target ES on {rest} prompts ↓"
    if head == "forget_scripts":
        return f"{rest} letters in forget outputs"
    if head == "probe_auc":
        return f"linear-probe AUC, forget vs retain, layer {rest} →0.5"
    return key


def escape(text: object) -> str:
    """User text (names, labels) as literal Markdown: no headings, links or markup."""
    out = str(text).replace("\r", " ").replace("\n", " ")
    for ch in "\\`*_[]<>#|!":
        out = out.replace(ch, "\\" + ch)
    return out


def code(text: object) -> str:
    """User text as a Markdown code span: literal, on one line, no backtick inside."""
    one_line = " ".join(str(text).split())
    return "`" + one_line.replace("`", "'") + "`"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def _cell(gate: Mapping[str, Any] | None) -> str:
    if gate is None:
        return "—"
    p = gate.get("p_adjusted")
    return gate["status"] + (f" (p={p:.2g})" if p is not None else "")


def _decision_rows(arms: Mapping[str, Any], n_seeds: int) -> list[list[str]]:
    rows = []
    for name, arm in arms.items():
        failing = [g["name"] for g in arm["gates"] if g["status"] == "fail"]
        missing = [g["name"] for g in arm["gates"] if g["status"] == "not evaluated"]
        seeds = (
            "1 (no seed variance)" if arm["seed_invariant"] else f"{len(arm['seeds_ok'])}/{n_seeds}"
        )
        rows.append(
            [
                code(name),
                f"**{arm['decision']}**",
                arm["label"],
                seeds,
                ", ".join(failing) or "—",
                ", ".join(missing) or "—",
            ]
        )
    return rows


_ATTACK_LABELS = {  # column labels of the raw outcomes of each attack
    "relearning": "forget ppl, relearning",
    "steering": "forget ppl, best steering",
    "in_context": "forget ES, with context",
    "logit_lens": "target mass: output / max block",
    "quantisation": "forget ppl, quantised",
}


def _raw_value(result: Mapping[str, Any] | None, attack: str) -> str:
    if not result:
        return "—"
    if "not_applicable" in result:
        return "n/a"
    if "error" in result:
        return "error"
    if attack == "relearning":
        before, after = result["log_ppl"][0], min(result["log_ppl"])
    elif attack == "steering":
        before = result["log_ppl_model"]
        after = min(v for row in result["log_ppl"] for v in row)
    elif attack == "quantisation":
        before, after = result["log_ppl_full"], min(result["log_ppl"])
    elif attack == "in_context":
        return (
            f"{fmt(result['extraction_strength'])} → {fmt(result['extraction_strength_context'])}"
        )
    else:
        return f"{fmt(result['mass'][-1])} (out) / {fmt(max(result['mass']))}"
    return f"{fmt(math.exp(before))} → {fmt(math.exp(after))}"


def _closeness_cell(judged: Mapping[str, Any] | None) -> str:
    if not judged or judged["status"] in ("not evaluated", "not applicable"):
        return "n/a" if judged and judged["status"] == "not applicable" else "—"
    before = judged["closeness_before"]
    head = "" if before is None else f"{before:.2f} → "
    return f"{head}{judged['closeness']:.2f} ({judged['status']})"


def _recoverability(recover: Mapping[str, Any]) -> list[str]:
    ref = recover["reference"]
    attacks = recover["attacks"]
    out = ["## Recoverability", ""]
    if ref is None:
        out.append(
            "No reference model: the attacks ran on the base model and the arms, but removal "
            "cannot be claimed against the base alone. Raw results below."
        )
    else:
        out.append(
            f"Each attack ran with identical settings on the base model, the references and "
            f"the arms; its strongest outcome is placed between the base model (0) and the "
            f"{ref} (1) under the same attack. **removed**: at least "
            f"{1 - recover['margin']:.2f} under every attack; **hidden**: some attack brings "
            "it below. Cells: before the attack → after it. A descriptive comparison of single "
            "attack runs, not a test."
        )
        out.append("")
        rows = []
        judged = {
            **{n: a["seeds"][min(a["seeds"], key=int)] for n, a in recover["arms"].items()},
            **{f"reference.{n}": v for n, v in recover["references"].items()},
        }
        for name, entry in judged.items():
            verdict = recover["arms"].get(name, entry)["verdict"]
            cells = [_closeness_cell(entry["attacks"].get(a)) for a in attacks]
            rows.append([code(name), f"**{verdict}**", *cells])
        out += _table(["model", "verdict", *attacks], rows)
        out.append("")
        for name, arm in recover["arms"].items():
            if arm["role"] == "arm":
                out.append(f"- {code(name)}: {escape(arm['reason'])}")
    out += [
        "",
        "Raw outcomes (perplexity before → after the strongest setting of each attack):",
        "",
    ]
    rows = [
        [code(name), *[_raw_value(res.get(a), a) for a in attacks]]
        for name, res in recover["results"].items()
    ]
    out += _table(["model", *(_ATTACK_LABELS[a] for a in attacks)], rows)
    if "relearning" in attacks:
        out += _relearning_curves(recover["results"])
    return out


def _relearning_curves(results: Mapping[str, Any]) -> list[str]:
    """Forget perplexity after each relearning step, and the steps until it is within 25%
    of the base model's (unattacked) perplexity."""
    curves = {
        name: res["relearning"]
        for name, res in results.items()
        if isinstance(res.get("relearning"), Mapping) and "log_ppl" in res["relearning"]
    }
    if not curves:
        return []
    steps = next(iter(curves.values()))["steps"]
    base = curves.get("base")
    near = None if base is None or base["log_ppl"][0] is None else base["log_ppl"][0]
    header = ["model", *(f"step {s}" for s in steps)]
    if near is not None:
        header.append("steps to within 25% of the base")
    rows = []
    for name, curve in curves.items():
        row = [code(name), *(fmt(math.exp(v)) if v is not None else "—" for v in curve["log_ppl"])]
        if near is not None:
            hit = [
                s
                for s, v in zip(curve["steps"], curve["log_ppl"], strict=True)
                if v is not None and v - near <= math.log(1.25)
            ]
            row.append(str(hit[0]) if hit else f"> {curve['steps'][-1]}")
        rows.append(row)
    return [
        "",
        "Relearning curves (forget perplexity after each fine-tuning step on held-out target "
        "texts):",
        "",
        *_table(header, rows),
    ]


def _metric_rows(
    keys: Sequence[str], data: Mapping[str, Any], arms: Mapping[str, Any], *, delta: bool
) -> list[list[str]]:
    rows = []
    for key in keys:
        if delta:
            row = [label(key)]
        else:
            base = data["base"]["metrics"].get(key)
            row = [label(key), fmt_ci(base["value"], base["ci"]) if base else "—"]
        for name in arms:
            m = arms[name]["metrics"].get(key)
            if delta:
                d = m.get("delta") if m else None
                row.append(fmt_delta(d) if d else "—")
            else:
                row.append(fmt_ci(m["mean"], m["ci"]) if m else "—")
        rows.append(row)
    return rows


def _eval_sizes(data: Mapping[str, Any]) -> str:
    n, scored = data["n_eval"], data.get("n_eval_texts")
    if scored is None or scored == n:
        return f"{n} evaluation texts per set"
    return f"{n} evaluation texts per set ({scored} held-out texts for teacher-forced metrics)"


def render_markdown(data: Mapping[str, Any]) -> str:
    """The report document as Markdown (user-given names are escaped)."""
    cfg = data["config"]
    every = data["arms"]
    arms = {n: a for n, a in every.items() if a["role"] == "arm"}
    controls = {n: a for n, a in every.items() if a["role"] == "control"}
    refs = data["references"]
    level = f"{100 * (1 - cfg['ci_alpha']):.0f}%"
    out: list[str] = [f"# mmie report: {escape(data['name'])}", ""]
    out.append(
        f"Model {code(cfg['model'])} ({cfg['dtype']}) · target {code(cfg['target'])} · "
        f"seeds {', '.join(map(str, cfg['seeds']))} · layers {data['layers']} · "
        f"{_eval_sizes(cfg['data'])} "
        f"({100 * cfg['split']['selection_fraction']:.0f}% for selection, the rest for the gates) · "
        f"mmie {data['mmie_version']} · config fingerprint `{data['fingerprint']}`"
    )
    out += ["", "## Verdict", "", data["summary"]["text"], ""]

    out += ["## Decisions", ""]
    header = ["arm", "decision", "label", "seeds ok", "failed gates", "not evaluated"]
    rows = _decision_rows(arms, len(cfg["seeds"]))
    recover = data.get("recoverability")
    if recover is not None:
        header.append("recoverability")
        for row, name in zip(rows, arms):
            row.append(recover["arms"].get(name, {}).get("verdict", "not attacked"))
    out += _table(header, rows)
    if recover is not None:
        out += ["", *_recoverability(recover)]

    out += ["", "## Gate calibration", ""]
    out.append(
        "Controls cannot have unlearned anything: each must fail at least one gate. The "
        "references are gold standards: the model that never saw the target (oracle) should "
        "pass every gate it can be judged on. Controls and references are judged at the "
        "unadjusted level."
    )
    out.append("")
    calib = {**{n: a["gates"] for n, a in controls.items()}}
    calib.update({f"reference.{n}": r["gates"] for n, r in refs.get("decisions", {}).items()})
    rows = []
    for gate in GATES:
        row = [gate]
        for gates in calib.values():
            row.append(_cell(next((g for g in gates if g["name"] == gate), None)))
        rows.append(row)
    decisions = [a["decision"] for a in controls.values()]
    decisions += [r["decision"] for r in refs.get("decisions", {}).values()]
    rows.append(["**decision**", *[f"**{d}**" for d in decisions]])
    out += _table(["gate", *[code(n) for n in calib]], rows)

    if refs.get("models"):
        out += ["", "## References", ""]
        out.append(
            "Closeness to the oracle: (arm − base) / (oracle − base) per metric; 0 is the "
            "base model, 1 the model that never saw the target (log scale for perplexity). "
            "PrivLeak: (AUC − AUC_retrain) / AUC_retrain of the MIA, 0 is the retrained model."
        )
        out.append("")
        close = refs.get("closeness_to_oracle", {})
        keys = sorted({k for row in close.values() for k in row})
        rows = [
            [code(n), *[fmt(close[n].get(k)) for k in keys], fmt(refs["privleak"].get(n))]
            for n in close
        ]
        if "base" in refs.get("privleak", {}):
            rows.insert(0, ["base", *["0.000"] * len(keys), fmt(refs["privleak"]["base"])])
        out += _table(["model", *[label(k) for k in keys], "PrivLeak"], rows)

    keys = sorted(set(data["base"]["metrics"]) | {k for a in arms.values() for k in a["metrics"]})
    order = list(LABELS)
    keys.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
    out += ["", "## Metrics", ""]
    out.append(
        f"Base model: value [{level} interval over items]. Arms: mean over seeds [{level} "
        f"interval over seeds (training runs); Student t below 10 seeds; none for an arm with "
        f"no seed variance]. — = not computed."
    )
    out.append("")
    out += _table(
        ["metric", "base", *[code(n) for n in arms]],
        _metric_rows(keys, data, arms, delta=False),
    )

    out += ["", "## Change versus the base model", ""]
    out.append(
        f"Mean paired per-item difference arm − base (the arm's item value is its mean over "
        f"seeds) [{level} interval over items]. Perplexity rows give the ratio arm / base of "
        f"the token-weighted perplexity."
    )
    out.append("")
    out += _table(["metric", *[code(n) for n in arms]], _metric_rows(keys, data, arms, delta=True))

    out += ["", "## Gates", ""]
    out.append(
        "Each gate's test runs per seed on the test items; an arm passes a gate when every "
        "seed passes (the p-value shown is the largest over seeds, Holm-adjusted across arms)."
    )
    out.append("")
    rows = [
        [
            gate,
            *[_cell(next((x for x in arms[n]["gates"] if x["name"] == gate), None)) for n in arms],
        ]
        for gate in GATES
    ]
    out += _table(["gate", *[code(n) for n in arms]], rows)
    out += ["", "### Reasons", ""]
    for name, arm in {**arms, **controls}.items():
        out.append(f"- {code(name)} — **{arm['decision']}** ({arm['label']})")
        out += [f"  - {reason}" for reason in arm["reasons"]]
    for name, ref in refs.get("decisions", {}).items():
        out.append(f"- `reference.{escape(name)}` — **{ref['decision']}** ({ref['label']})")
        out += [f"  - {reason}" for reason in ref["reasons"]]

    out += ["", "## Runs", ""]
    status = {(u["seed"], u["arm"]): u for u in data["units"]}
    names = [*arms, *controls]
    rows = []
    for seed in cfg["seeds"]:
        row = [str(seed)]
        for n in names:
            if every[n]["seed_invariant"] and seed != cfg["seeds"][0]:
                row.append("(one run)")
            else:
                row.append(status.get((seed, n), {"status": "missing"})["status"])
        rows.append(row)
    out += _table(["seed", *[code(n) for n in names]], rows)
    errors = [u for u in data["units"] if u["status"] == "failed"]
    if errors:
        out += ["", "Failures (full tracebacks are in the shards and the log):", ""]
        out += [f"- seed {u['seed']}, {code(u['arm'])}: {escape(u['error'])}" for u in errors]
    out.append("")
    return "\n".join(out)

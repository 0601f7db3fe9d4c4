"""The Markdown rendering of a report: tables with intervals, gate verdicts and reasons.

:func:`render_markdown` turns a report document into ``report.md``; the label table and
number formatting here are shared with the summary text and the plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmie.study.decisions import GATES

__all__ = ["LABELS", "fmt", "fmt_ci", "fmt_delta", "label", "render_markdown"]

# Record key -> (label, better direction) for tables; unknown keys are shown as they are.
LABELS: dict[str, tuple[str, str]] = {
    "forget_es": ("forget ES (Hindi prompts)", "↓"),
    "mixed_es": ("mixed-prompt ES", "↓"),
    "romanized_es": ("romanised-Hindi ES", "↓"),
    "forget_script_mass": ("P(next letter is Devanagari)", "↓"),
    "retain_ppl": ("retain perplexity", "↓"),
    "forget_ppl": ("forget perplexity", "↑"),
    "mia_auc": ("MIA AUC (loss attack)", "→0.5"),
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
    if key in LABELS:
        label, direction = LABELS[key]
        return f"{label} {direction}"
    if key.startswith("related_ppl."):
        return f"{key.split('.', 1)[1]} perplexity ↓"
    if key.startswith("related_es."):
        return f"Hindi ES on {key.split('.', 1)[1]} prompts ↓"
    if key.startswith("probe_auc."):
        return f"linear-probe AUC, forget vs retain, layer {key.split('.', 1)[1]} →0.5"
    return key


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def render_markdown(data: Mapping[str, Any]) -> str:
    cfg = data["config"]
    arms: Mapping[str, Any] = data["arms"]
    names = list(arms)
    level = f"{100 * (1 - cfg['ci_alpha']):.0f}%"
    out: list[str] = [f"# mmie report: {data['name']}", ""]
    out.append(
        f"Model `{cfg['model']}` ({cfg['dtype']}) · seeds {', '.join(map(str, cfg['seeds']))} · "
        f"layers {data['layers']} · {cfg['data']['n_eval']} evaluation texts per set · "
        f"mmie {data['mmie_version']} · config fingerprint `{data['fingerprint']}`"
    )
    out += ["", "## Verdict", "", data["summary"]["text"], ""]

    out += ["## Decisions", ""]
    rows = []
    for name in names:
        arm = arms[name]
        failing = [g["name"] for g in arm["gates"] if g["status"] == "fail"]
        missing = [g["name"] for g in arm["gates"] if g["status"] == "not evaluated"]
        rows.append(
            [
                f"`{name}`",
                f"**{arm['decision']}**",
                f"{len(arm['seeds_ok'])}/{len(cfg['seeds'])}",
                ", ".join(failing) or "—",
                ", ".join(missing) or "—",
            ]
        )
    out += _table(["arm", "decision", "seeds ok", "failed gates", "not evaluated"], rows)

    keys = sorted(set(data["base"]["metrics"]) | {k for a in arms.values() for k in a["metrics"]})
    order = list(LABELS)
    keys.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
    out += ["", "## Metrics", ""]
    out.append(
        f"Base model: value [{level} interval over items]. Arms: mean over seeds "
        f"[{level} interval over seeds; Student t below 10 seeds]. — = not computed."
    )
    out.append("")
    rows = []
    for key in keys:
        base = data["base"]["metrics"].get(key)
        row = [label(key), fmt_ci(base["value"], base["ci"]) if base else "—"]
        for name in names:
            m = arms[name]["metrics"].get(key)
            row.append(fmt_ci(m["mean"], m["ci"]) if m else "—")
        rows.append(row)
    out += _table(["metric", "base", *[f"`{n}`" for n in names]], rows)

    out += ["", "## Change versus the base model", ""]
    out.append(
        f"Mean paired per-item difference arm − base (the arm's item value is its mean over "
        f"seeds) [{level} interval over items]. Perplexity rows give the ratio arm / base of "
        f"the token-weighted perplexity."
    )
    out.append("")
    rows = []
    for key in keys:
        row = [label(key)]
        for name in names:
            m = arms[name]["metrics"].get(key)
            d = m.get("delta") if m else None
            row.append(fmt_delta(d) if d else "—")
        rows.append(row)
    out += _table(["metric", *[f"`{n}`" for n in names]], rows)

    out += ["", "## Gates", ""]
    rows = []
    for gate in GATES:
        row = [gate]
        for name in names:
            g = next((x for x in arms[name]["gates"] if x["name"] == gate), None)
            if g is None:
                row.append("—")
                continue
            p = g.get("p_adjusted")
            row.append(g["status"] + (f" (p={p:.2g})" if p is not None else ""))
        rows.append(row)
    out += _table(["gate", *[f"`{n}`" for n in names]], rows)
    out += ["", "### Reasons", ""]
    for name in names:
        out.append(f"- `{name}` — **{arms[name]['decision']}**")
        out += [f"  - {reason}" for reason in arms[name]["reasons"]]

    out += ["", "## Runs", ""]
    status = {(u["seed"], u["arm"]): u for u in data["units"]}
    rows = []
    for seed in cfg["seeds"]:
        rows.append(
            [str(seed)] + [status.get((seed, n), {"status": "missing"})["status"] for n in names]
        )
    out += _table(["seed", *[f"`{n}`" for n in names]], rows)
    errors = [u for u in data["units"] if u["status"] == "failed"]
    if errors:
        out += ["", "Failures (full tracebacks are in the shards and the log):", ""]
        out += [f"- seed {u['seed']}, `{u['arm']}`: {u['error']}" for u in errors]
    out.append("")
    return "\n".join(out)

"""Figures of a report (needs the ``plot`` extra, matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmie.study.markdown import label
from mmie.study.report import Report

__all__ = ["plot_report"]


# ----------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: install the plot extra with "
            "`python3 -m pip install 'mmie[plot]'`"
        ) from exc
    return plt


def plot_report(report: Report, directory: str | os.PathLike[str]) -> list[Path]:
    """Draw the report's figures as PNG files (needs the ``plot`` extra).

    * ``metrics.png``: per metric (forget ES, mixed ES, retain perplexity, ...), the base
      value and each arm's mean with its interval over seeds.
    * ``dose_response.png``: for gate arms evaluated at several ``alpha`` values (arms of the
      same kind that differ in alpha), forget ES against alpha with intervals. Skipped when
      no kind has two alphas.
    * ``tradeoff.png``: forget ES against retain perplexity (both with their intervals over
      seeds), one point per arm, with the base model and the reference models: the
      bottom-left corner is what unlearning wants. Skipped without those two metrics.
    * ``recoverability.png`` (with the ``robustness`` metric group): the relearning curves
      (forget perplexity after each fine-tuning step) and the logit-lens lines (target-script
      mass read at every block output) of the base model, the references and each attacked
      arm. Skipped when neither attack ran.

    Args:
        report: the report.
        directory: where to write the files (created if needed).

    Returns:
        The files written.

    Raises:
        ImportError: matplotlib is not installed (the message names the extra).
    """
    plt = _pyplot()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = report.data
    arms = data["arms"]
    names = list(arms)
    keys = [
        k
        for k in ("forget_es", "mixed_es", "romanized_es", "retain_ppl", "forget_ppl", "mia_auc")
        if k in data["base"]["metrics"]
    ]
    written: list[Path] = []
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            base = data["base"]["metrics"][key]
            ax.axhline(base["value"], color="grey", linestyle="--", label="base")
            for i, name in enumerate(names):
                m = arms[name]["metrics"].get(key)
                if m is None:
                    continue
                ci = m["ci"]
                err = (
                    [[max(0.0, m["mean"] - ci["low"])], [max(0.0, ci["high"] - m["mean"])]]
                    if ci is not None
                    else None
                )
                ax.errorbar([i], [m["mean"]], yerr=err, fmt="o", capsize=4)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax.set_title(label(key), fontsize=9)
            if key.endswith("_ppl"):
                ax.set_yscale("log")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = d / "metrics.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    groups: dict[str, list[tuple[float, str]]] = {}
    for name, arm in arms.items():
        if "forget_es" in arm["metrics"] and any(
            p in arm["kind"] for p in ("sae_gate", "dynamic_gate")
        ):
            groups.setdefault(arm["kind"], []).append((float(arm["config"]["alpha"]), name))
    groups = {k: sorted(v) for k, v in groups.items() if len({a for a, _ in v}) >= 2}
    if groups:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for kind, points in groups.items():
            xs = [a for a, _ in points]
            ms = [arms[n]["metrics"]["forget_es"] for _, n in points]
            ys = [m["mean"] for m in ms]
            lo = [max(0.0, m["mean"] - (m["ci"]["low"] if m["ci"] else m["mean"])) for m in ms]
            hi = [max(0.0, (m["ci"]["high"] if m["ci"] else m["mean"]) - m["mean"]) for m in ms]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=kind)
        if "forget_es" in data["base"]["metrics"]:
            ax.axhline(
                data["base"]["metrics"]["forget_es"]["value"],
                color="grey",
                linestyle="--",
                label="base",
            )
        ax.set_xlabel("alpha")
        ax.set_ylabel("forget ES")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = d / "dose_response.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    tradeoff = _plot_tradeoff(plt, data, d / "tradeoff.png")
    if tradeoff is not None:
        written.append(tradeoff)
    recover = data.get("recoverability")
    if recover:
        drawn = _plot_recoverability(plt, recover["results"], d / "recoverability.png")
        if drawn is not None:
            written.append(drawn)
    return written


_REFERENCE_STYLES: dict[str, dict[str, Any]] = {
    "base": {"color": "grey", "linestyle": "--", "linewidth": 2.5, "zorder": 0},
    "reference.oracle": {"color": "black", "linestyle": ":", "linewidth": 2.0},
    "reference.retrain": {"color": "dimgrey", "linestyle": "-.", "linewidth": 2.0},
}


def _usable(result: Any, key: str) -> bool:
    return isinstance(result, dict) and key in result and "error" not in result


def _plot_recoverability(plt: Any, results: dict[str, Any], path: Path) -> Path | None:
    curves = {
        n: r["relearning"] for n, r in results.items() if _usable(r.get("relearning"), "log_ppl")
    }
    lens = {n: r["logit_lens"] for n, r in results.items() if _usable(r.get("logit_lens"), "mass")}
    panels = [p for p in (("relearning", curves), ("logit_lens", lens)) if p[1]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.6, 3.6), squeeze=False)
    for ax, (attack, series) in zip(axes[0], panels):
        for name, res in series.items():
            style = _REFERENCE_STYLES.get(name, {})
            if attack == "relearning":
                xs, ys = res["steps"], res["perplexity"]
            else:
                xs, ys = res["layers"], res["mass"]
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name, **style)
        if attack == "relearning":
            ax.set_xlabel("relearning steps")
            ax.set_ylabel("forget perplexity")
            ax.set_yscale("log")
        else:
            ax.set_xlabel("block")
            ax.set_ylabel("target-script mass (logit lens)")
            ax.set_ylim(0.0, 1.0)
            ax.set_xticks(sorted({x for res in series.values() for x in res["layers"]}))
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _interval(metric: dict[str, Any]) -> list[list[float]] | None:
    ci = metric.get("ci")
    if ci is None:
        return None
    return [[max(0.0, metric["mean"] - ci["low"])], [max(0.0, ci["high"] - metric["mean"])]]


def _plot_tradeoff(plt: Any, data: dict[str, Any], path: Path) -> Path | None:
    x_key, y_key = "retain_ppl", "forget_es"
    base = data["base"]["metrics"]
    if x_key not in base or y_key not in base:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = {"arm": "o", "control": "s"}
    for name, arm in data["arms"].items():
        x, y = arm["metrics"].get(x_key), arm["metrics"].get(y_key)
        if x is None or y is None:
            continue
        ax.errorbar(
            [x["mean"]], [y["mean"]], xerr=_interval(x), yerr=_interval(y),
            fmt=markers.get(arm["role"], "o"), capsize=3, label=name,
            alpha=0.55 if arm["role"] == "control" else 1.0,
        )  # fmt: skip
    ax.plot([base[x_key]["value"]], [base[y_key]["value"]], "k*", markersize=12, label="base")
    refs = data.get("references", {}).get("models", {})
    for name, style in (("oracle", "kP"), ("retrain", "kX")):
        ref = refs.get(name)
        if ref and x_key in ref and y_key in ref:
            ax.plot([ref[x_key]], [ref[y_key]], style, markersize=9, label=f"reference.{name}")
    ax.set_xscale("log")
    ax.set_xlabel("retain perplexity (lower keeps more)")
    ax.set_ylabel("forget ES (lower forgets more)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

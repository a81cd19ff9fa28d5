"""Turn a bench's results into summary.json, PNG plots and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from dataclasses import fields

import numpy as np

from .. import __version__
from ..calibration import calibration_record
from ..meter import Cost
from ..metrics import improvement_score
from .run import CellResults
from .spec import BenchSpec
from .stats import distinct_n, mean_interval, resample_indices, speedup, win_rates, win_tie_lose


def charged_costs(results) -> list[Cost]:
    """Each result's cost plus an equal share of the cell's `r_star dataset` calibration (calibration.py): paid
    once for the prompt set, so a cell's per-prompt figures include it and compare fairly with `auto`."""
    record = calibration_record(results)
    if record is None:
        return [r.cost for r in results]
    total = Cost.from_dict(record["cost"])
    share = Cost(**{f.name: getattr(total, f.name) / len(results) for f in fields(Cost)})
    share.peak_memory_bytes = total.peak_memory_bytes  # a peak, not a sum
    return [r.cost + share for r in results]


def summarize(spec: BenchSpec, cells: list[CellResults], setting: dict) -> dict:
    n_prompts = len(cells[0].results)
    idx = resample_indices(n_prompts, spec.bootstrap, spec.seed)
    bon_ref = spec.reference_best_of_n()
    ref_candidates = None
    if bon_ref is not None:
        ref_cell = next(c for c in cells if c.name == bon_ref.name)
        ref_candidates = [r.details["candidate_rewards"] for r in ref_cell.results]
    reference = next(c for c in cells if c.name == spec.default_reference())
    judge = "gold" if reference.gold is not None else "reward"

    def scores(cell: CellResults) -> list[float]:
        """Per-prompt score used for the speedup: the improvement score if there is a reference Best-of-N."""
        if ref_candidates is None:
            return [r.reward for r in cell.results]
        return [improvement_score(r.reward, c) for r, c in zip(cell.results, ref_candidates)]

    bon_cells = sorted((c for c in cells if c.method == "best-of-n"), key=lambda c: c.config["n"])
    out_cells = []
    charged = {cell.name: charged_costs(cell.results) for cell in cells}
    for cell in cells:
        costs = charged[cell.name]
        rewards = [r.reward for r in cell.results]
        seconds = [c.seconds for c in costs]
        tokens = [c.lm_tokens for c in costs]
        row = {
            "name": cell.name, "method": cell.method, "config": cell.config,
            "reward": mean_interval(rewards, idx).to_dict(),
            "reward_std": float(np.std(rewards)),
            "gold_reward": mean_interval(cell.gold, idx).to_dict() if cell.gold is not None else None,
            "improvement_score": mean_interval(scores(cell), idx).to_dict() if ref_candidates else None,
            "distinct_1": distinct_n([r.response for r in cell.results], 1),
            "distinct_2": distinct_n([r.response for r in cell.results], 2),
            "mean_response_tokens": float(np.mean([r.response_tokens for r in cell.results])),
            "seconds": mean_interval(seconds, idx).to_dict(),
            "lm_tokens": float(np.mean(tokens)),
            "lm_positions": float(np.mean([c.lm_positions for c in costs])),  # computed, padding included
            "lm_forward_calls": float(np.mean([c.lm_forward_calls for c in costs])),
            "rm_calls": float(np.mean([c.rm_calls for c in costs])),
            "rm_tokens": float(np.mean([c.rm_tokens for c in costs])),
            "rm_positions": float(np.mean([c.rm_positions for c in costs])),  # computed, reuse excluded
            "peak_memory_bytes": int(max(c.peak_memory_bytes for c in costs)),
            # r_star dataset: its value and what calibrating it cost in all (included above, shared out)
            "r_star_calibration": calibration_record(cell.results),
        }
        if cell is not reference:
            mine = cell.gold if judge == "gold" else rewards
            theirs = reference.gold if judge == "gold" else [r.reward for r in reference.results]
            row["vs_reference"] = win_rates(win_tie_lose(mine, theirs, spec.tie_margin), idx)
        if len(bon_cells) >= 2 and cell.method != "best-of-n":
            row["speedup_seconds"] = speedup([[c.seconds for c in charged[b.name]] for b in bon_cells],
                                             [scores(b) for b in bon_cells], seconds, scores(cell), idx)
            row["speedup_tokens"] = speedup([[c.lm_tokens for c in charged[b.name]] for b in bon_cells],
                                            [scores(b) for b in bon_cells], tokens, scores(cell), idx)
        out_cells.append(row)
    return {
        "setting": setting, "command": spec.command, "versions": versions(),
        "reference": reference.name, "judge": judge, "tie_margin": spec.tie_margin,
        "improvement_reference": bon_ref.name if bon_ref else None,
        "bootstrap_resamples": spec.bootstrap, "cells": out_cells,
    }


def versions() -> dict:
    import torch
    import transformers

    return {"secateurs": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------------------- plots
def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_reward_vs_compute(summary: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summary["cells"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, label in ((axes[0], "seconds", "seconds per prompt"), (axes[1], "lm_tokens", "LM tokens per prompt")):
        def x(c):
            return c[key]["value"] if isinstance(c[key], dict) else c[key]
        bon = sorted((c for c in cells if c["method"] == "best-of-n"), key=lambda c: c["config"]["n"])
        if bon:
            ys = [c["reward"]["value"] for c in bon]
            err = [[c["reward"]["value"] - c["reward"]["ci_low"] for c in bon],
                   [c["reward"]["ci_high"] - c["reward"]["value"] for c in bon]]
            ax.errorbar([x(c) for c in bon], ys, yerr=err, marker="o", color="black", capsize=3, label="Best-of-N")
            for c in bon:
                ax.annotate(f"N={c['config']['n']}", (x(c), c["reward"]["value"]), textcoords="offset points",
                            xytext=(4, -12), fontsize=8)
        others = [c for c in cells if c["method"] != "best-of-n"]
        for i, c in enumerate(others):
            r = c["reward"]
            ax.errorbar([x(c)], [r["value"]], yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                        marker="s", linestyle="none", capsize=3, color=plt.cm.tab10(i % 10), label=c["name"])
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel("mean reward (95% CI)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("Reward versus compute")
    png = _figure_png(fig)
    plt.close(fig)
    return png


def plot_reward_distribution(cells: list[CellResults]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_gold = all(c.gold is not None for c in cells)
    fig, axes = plt.subplots(1, 2 if has_gold else 1, figsize=(12 if has_gold else 7, 0.45 * len(cells) + 2),
                             squeeze=False)
    panels = [("reward", [[r.reward for r in c.results] for c in cells])]
    if has_gold:
        panels.append(("gold reward", [c.gold for c in cells]))
    for i, (ax, (title, data)) in enumerate(zip(axes[0], panels)):
        ax.boxplot(data, orientation="horizontal", tick_labels=[c.name for c in cells])
        if i:  # the names stand once, left of the first panel
            ax.tick_params(labelleft=False)
        ax.set_xlabel(title + " per prompt")
        ax.grid(alpha=0.3, axis="x")
        ax.invert_yaxis()
    fig.suptitle("Reward distribution per method")
    png = _figure_png(fig)
    plt.close(fig)
    return png


# ---------------------------------------------------------------------------------------------- html
def _fmt(interval: dict | None, digits: int = 3) -> str:
    if not interval:
        return "-"
    return f"{interval['value']:.{digits}f} [{interval['ci_low']:.{digits}f}, {interval['ci_high']:.{digits}f}]"


def _speed(s: dict | None) -> str:
    if not s:
        return "-"
    mark = {"above": "&ge;", "below": "&le;"}.get(s["bound"], "")
    text = f"{mark}{s['value']:.2f}x [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
    return text + (" <em>no difference</em>" if s["no_difference"] else "")


def _wins(w: dict | None) -> str:
    if not w:
        return "(reference)"
    text = f"{100 * w['win']:.0f} / {100 * w['tie']:.0f} / {100 * w['lose']:.0f}"
    return text + (" <em>no difference</em>" if w["no_difference"] else "")


def calibration_lines(summary: dict) -> list[str]:
    """One line per cell whose r_star was calibrated once for the set (r_star dataset): its value and cost."""
    lines = []
    for c in summary["cells"]:
        record = c.get("r_star_calibration")
        if record:
            cost = record["cost"]
            lines.append(f"{c['name']}: r_star {record['r_star']:.3f}, calibrated once on {record['prompts']} prompts x "
                         f"{record['samples']} samples for {cost['lm_tokens_prefilled'] + cost['lm_tokens_decoded']} "
                         f"LM tokens and {cost['seconds']:.1f} s in all (shared out over the prompts in its row)")
    return lines


def render_html(summary: dict, prompts, cells: list[CellResults], images: dict[str, bytes]) -> str:
    s = summary["setting"]
    head = ["method", "reward (95% CI)", "gold reward", "improvement score", f"win / tie / lose % vs {summary['reference']}",
            "distinct-1 / 2", "length", "seconds", "LM tokens", "LM positions", "LM calls", "RM calls", "RM tokens", "RM positions",
            "peak memory (MiB)",
            "speedup (s)", "speedup (tokens)"]
    rows = []
    for c in summary["cells"]:
        rows.append([c["name"], _fmt(c["reward"]), _fmt(c["gold_reward"]), _fmt(c["improvement_score"], 1),
                     _wins(c.get("vs_reference")), f"{c['distinct_1']:.2f} / {c['distinct_2']:.2f}",
                     f"{c['mean_response_tokens']:.0f}", _fmt(c["seconds"], 2), f"{c['lm_tokens']:.0f}",
                     f"{c.get('lm_positions', c['lm_tokens']):.0f}", f"{c['lm_forward_calls']:.0f}", f"{c['rm_calls']:.1f}",
                     f"{c.get('rm_tokens', 0):.0f}", f"{c.get('rm_positions', 0):.0f}", f"{c['peak_memory_bytes'] / 2**20:.0f}",
                     _speed(c.get("speedup_seconds")), _speed(c.get("speedup_tokens"))])
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{v if i else html.escape(v)}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows
    ) + "</table>"
    pictures = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
                       f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' for title, png in images.items())
    examples = []
    for i, prompt in enumerate(prompts[:3]):
        cols = "".join(f"<td><b>{html.escape(c.name)}</b> (reward {c.results[i].reward:.3f})<br>"
                       f"{html.escape(c.results[i].response)}</td>" for c in cells)
        examples.append(f"<h3>{html.escape(prompt.id)}: {html.escape(prompt.text)}</h3><table><tr>{cols}</tr></table>")
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    calibrations = "".join(f"<p>{html.escape(line)}</p>" for line in calibration_lines(summary))
    notes = (f"Means over {s['prompts']} prompts with 95% bootstrap intervals ({summary['bootstrap_resamples']} "
             f"resamples over prompts). Improvement score: 100 = the best of {summary['improvement_reference']}'s "
             "candidates for the prompt, 0 = the worst. Win / tie / lose: judged by the "
             f"{'gold reward' if summary['judge'] == 'gold' else 'guiding reward (no gold reward given)'}, ties within "
             f"{summary['tie_margin']}. Speedup: Best-of-N compute at equal score (interpolated in log compute) over "
             "the method's; &ge; marks a lower bound (the method beats every Best-of-N). <em>no difference</em>: "
             "the interval includes no difference. Seconds: the policy and rewards were warmed up on one prompt "
             "before the first cell, so a cell's time does not depend on its place in the grid.")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>secateurs bench</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}}th{{background:#f3f3f3}}
code{{background:#f3f3f3;padding:2px 4px}}img{{max-width:100%}}</style></head><body>
<h1>secateurs bench</h1>
<p>Policy <b>{html.escape(str(s['policy']))}</b>, reward <b>{html.escape(str(s['reward']))}</b>, gold reward
<b>{html.escape(str(s['gold_reward']))}</b>, seed {s['seed']}, device {html.escape(s['device'])}.</p>
<p>Command: <code>{html.escape(summary['command'])}</code></p><p>Versions: {html.escape(versions)}</p>
{table}{calibrations}<p>{notes}</p>{pictures}<h2>Examples</h2>{''.join(examples)}</body></html>"""


def write_report(spec: BenchSpec, prompts, cells: list[CellResults], setting: dict) -> dict:
    summary = summarize(spec, cells, setting)
    (spec.out / "summary.json").write_text(json.dumps(summary, indent=2))
    images = {"Reward versus compute": plot_reward_vs_compute(summary),
              "Reward distribution": plot_reward_distribution(cells)}
    (spec.out / "reward_vs_compute.png").write_bytes(images["Reward versus compute"])
    (spec.out / "reward_distribution.png").write_bytes(images["Reward distribution"])
    (spec.out / "report.html").write_text(render_html(summary, prompts, cells, images), encoding="utf-8")
    return summary

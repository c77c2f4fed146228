"""Tables and plots of bench/nnunet_pet.py: Dice / IoU / FPV / FNV against training fraction, mean +- sd over seeds.

Imported by path from bench/nnunet_pet.py (bench/ is not a package); reads only the bench's ``results.json`` payload.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medfoundry.io.figures import pyplot_agg, save_figure

PAPER_10 = {"baseline": (0.47, 0.35), "sam": (0.45, 0.34)}  # AutoPET III, 10 % of the training scans: Dice, IoU
WEIGHT_HINTS = {
    "convnext1": "ConvNeXt-Base weights",
    "convnext2": "ConvNeXt-Base weights",
    "dino": "DINOv2-Base weights",
}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def summarise(points: list[dict]) -> list[dict]:
    """One row per (variant, fraction, epochs): mean +- sd over seeds of each seed's mean over the test patients."""
    rows = []
    keys = {(p["variant"], p["fraction"], p["epochs"]) for p in points}
    keys = sorted(keys, key=lambda k: (-k[2], k[0] != "baseline", k[0], -k[1]))
    for variant, fraction, epochs in keys:
        pts = [p for p in points if (p["variant"], p["fraction"], p["epochs"]) == (variant, fraction, epochs)]
        pts.sort(key=lambda p: p["seed"])
        per_seed = [p["mean_dice"] for p in pts]
        pooled = [c["dice"] for p in pts for c in p["cases"] if c["dice"] is not None]
        rows.append(
            {
                "variant": variant,
                "fraction": fraction,
                "epochs": epochs,
                "training_patients": sorted({len(p["training_cases"]) for p in pts}),
                "seeds": [p["seed"] for p in pts],
                "dice": _mean(per_seed),
                "dice_sd_seeds": _sd(per_seed),
                "dice_sd_patients": float(np.std(pooled)) if pooled else math.nan,
                "dice_per_seed": per_seed,
                "iou": _mean([p["mean_iou"] for p in pts]),
                "fpv_ml": _mean([p["mean_fpv_ml"] for p in pts]),
                "fnv_ml": _mean([p["mean_fnv_ml"] for p in pts]),
                "train_s": _mean([p["train_s"] for p in pts]),
                "s_per_iteration": _mean([p["s_per_iteration"] for p in pts]),
                "predict_s": _mean([p["predict_s"] for p in pts]),
            }
        )
    return rows


def _f(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_text(payload: dict) -> str:
    """The Markdown report: setting, results table (run and not-run variants), paired differences, curve."""
    a = payload["setting"]
    lines = [
        f"nnU-Net 2D on PET-STS: epochs x {a['iterations']} iterations (epochs per row), batch {a['batch_size']}, "
        f"{a['val_iterations']} validation iterations/epoch, device {a['device']}, mirroring {a['mirroring']}, "
        f"frozen encoder on {a['encoder_backend']}; test patients ({len(payload['test'])}, the same for every run): "
        f"{', '.join(payload['test'])}; seeds re-draw the training patients of each fraction and the training RNG.",
        "",
        "| variant | fraction | epochs | training patients | seeds | Dice mean +- sd (seeds) | Dice sd (patients) | "
        "IoU | FPV mL | FNV mL | train s / run | s / iteration | predict s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["summary"]:
        n = "/".join(str(x) for x in r["training_patients"])
        lines.append(
            f"| {r['variant']} | {r['fraction']:g}% | {r['epochs']} | {n} | {len(r['seeds'])} | {_f(r['dice'])} +- "
            f"{_f(r['dice_sd_seeds'])} | {_f(r['dice_sd_patients'])} | {_f(r['iou'])} | {_f(r['fpv_ml'], 1)} | "
            f"{_f(r['fnv_ml'], 1)} | {_f(r['train_s'], 0)} | {_f(r['s_per_iteration'], 2)} | {_f(r['predict_s'], 0)} |"
        )
    for variant, why in payload.get("not_run", {}).items():
        lines.append(f"| {variant} | - | - | - | - | not run: {why} | | | | | | | |")
    lines += ["", "Paired difference sam - baseline (same fraction, seed, schedule, patients and test patients):", ""]
    by = {(p["variant"], p["fraction"], p["seed"], p["epochs"]): p for p in payload["points"]}
    pairs = [(f, s, e) for (v, f, s, e) in by if v == "sam" and ("baseline", f, s, e) in by]
    for f, s, e in sorted(pairs, key=lambda x: (-x[0], x[1])):
        sam, base = by[("sam", f, s, e)], by[("baseline", f, s, e)]
        per_case = [a["dice"] - b["dice"] for a, b in zip(sam["cases"], base["cases"], strict=True)]
        wins = sum(d > 0 for d in per_case)
        lines.append(
            f"- {f:g}% seed {s}, {e} epochs: {sam['mean_dice'] - base['mean_dice']:+.3f} "
            f"(per test patient {' / '.join(f'{d:+.3f}' for d in per_case)}; sam better on {wins} of {len(per_case)})"
        )
    if not pairs:
        lines.append("- none (no sam point ran)")
    p10 = PAPER_10
    lines += [
        "",
        f"Paper (AutoPET III, 10 % of 1,461 training scans, full GPU schedule): nnU-Net Dice {p10['baseline'][0]} / "
        f"IoU {p10['baseline'][1]}, nnSAM Dice {p10['sam'][0]} / IoU {p10['sam'][1]}.",
    ]
    curves = payload.get("curves", {})
    if curves:
        lines += ["", "Test Dice against training length (mean over seeds; the last column is the final model):", ""]
        epochs = sorted({int(e) for c in curves.values() for e in c})
        lines.append("| variant | fraction | schedule | " + " | ".join(f"epoch {e}" for e in epochs) + " |")
        lines.append("|---|---|---|" + "---|" * len(epochs))
        for key, curve in sorted(curves.items(), key=lambda kv: _curve_order(kv[0])):
            variant, fraction, total = key.split("@")
            cells = [_f(_mean(curve[str(e)])) if str(e) in curve else "-" for e in epochs]
            lines.append(f"| {variant} | {float(fraction):g}% | {total} epochs | " + " | ".join(cells) + " |")
    t = payload["times"]
    lines += ["", f"Wall time: {t['total_s'] / 60:.1f} min (prepare + plan {t['plan_s']:.0f} s)."]
    return "\n".join(lines)


def _curve_order(key: str) -> tuple:
    variant, fraction, total = key.split("@")
    return (-int(total), variant != "baseline", variant, -float(fraction))


def curves_from_points(points: list[dict]) -> dict:
    """``"variant@fraction@epochs" -> {epoch: [mean test Dice per seed]}`` from each point's snapshot curve."""
    curves: dict[str, dict[str, list[float]]] = {}
    for p in points:
        key = f"{p['variant']}@{p['fraction']:g}@{p['epochs']}"
        for epoch, dice in p.get("curve", {}).items():
            curves.setdefault(key, {}).setdefault(str(epoch), []).append(dice)
    return curves


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:  # noqa: ANN001 - matplotlib objects
    """Labels, a 0-1 Dice axis, grid and legend; save and close."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True)


def plot_dice(payload: dict, path: Path) -> None:
    """Dice (mean +- sd over seeds, each seed as a dot) against training fraction, with the paper's 10 % values."""
    plt = pyplot_agg()
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
        colours = {"baseline": "tab:blue", "sam": "tab:orange"}
        longest = max(r["epochs"] for r in payload["summary"])
        for variant, epochs in dict.fromkeys((r["variant"], r["epochs"]) for r in payload["summary"]):
            rows = [r for r in payload["summary"] if (r["variant"], r["epochs"]) == (variant, epochs)]
            rows.sort(key=lambda r: r["fraction"])
            shift = 1.0 if epochs == longest else 1.12  # the shorter paired schedule drawn beside its fraction
            x = [r["fraction"] * shift for r in rows]
            sd = [0.0 if math.isnan(r["dice_sd_seeds"]) else r["dice_sd_seeds"] for r in rows]
            c = colours.get(variant)
            style = {"marker": "o" if epochs == longest else "s", "linestyle": "-" if epochs == longest else ":"}
            label = f"{variant}, {epochs} epochs"
            ax.errorbar(x, [r["dice"] for r in rows], yerr=sd, capsize=3, color=c, label=label, **style)
            for r in rows:
                ax.scatter([r["fraction"] * shift] * len(r["dice_per_seed"]), r["dice_per_seed"], s=10, alpha=0.4,
                           color=c)  # fmt: skip
        for variant, (dice, _) in PAPER_10.items():
            ax.scatter([10], [dice], marker="x", color=colours[variant], label=f"paper {variant} (AutoPET III)")
        fractions = sorted({r["fraction"] for r in payload["summary"]})
        ax.set_xscale("log")
        ax.set_xticks(fractions)
        ax.set_xticklabels([f"{f:g}%" for f in fractions])
        _finish(fig, ax, path, "training fraction (of 24 patients)", "test Dice (6 patients)")


def plot_curves(payload: dict, path: Path) -> None:
    """Test Dice against epochs (mean over seeds, each seed faint), one line per (variant, fraction)."""
    plt = pyplot_agg()
    curves = payload.get("curves", {})
    if not curves:
        return
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
        for key, curve in sorted(curves.items(), key=lambda kv: _curve_order(kv[0])):
            variant, fraction, total = key.split("@")
            epochs = sorted(int(e) for e in curve)
            mean = [_mean(curve[str(e)]) for e in epochs]
            style = "-" if variant == "baseline" else "--"
            label = f"{variant} {float(fraction):g}% ({total}-epoch schedule)"
            (line,) = ax.plot(epochs, mean, style, marker="o", label=label)
            seeds = len(curve[str(epochs[0])])
            for i in range(seeds):
                ys = [curve[str(e)][i] if i < len(curve[str(e)]) else math.nan for e in epochs]
                ax.plot(epochs, ys, style, color=line.get_color(), alpha=0.25, linewidth=0.8)
        _finish(fig, ax, path, "epoch", "test Dice")

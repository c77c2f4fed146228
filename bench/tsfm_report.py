"""Tables and plots of bench/tsfm_transfer.py (pool table, remap table, Dice vs labelled patients, curves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.io.figures import pyplot_agg, save_figure
from medfoundry.training.nnunet.report import markdown_table

ARMS = ("pretrained", "from scratch")


def pool_text(tables: dict, index: dict) -> str:
    """The pool table (dataset, modality, cases, labels, sampling share) and the label remapping table."""
    voxels = {}
    for case in index["cases"]:
        voxels.setdefault(case["source"], []).append(case["shape"])
    rows = [
        {
            "dataset": r["source"],
            "modality": r["modality"],
            "cases": r["cases"],
            "labels (pool classes)": r["classes"],
            "P(case)": f"{r['p_case']:.3f}",
            "sampling share": f"{r['share']:.1%}",
        }
        for r in tables["sampling"]
    ]
    cols = list(rows[0])
    remap = [
        {
            "dataset": r["source"],
            "source ids": r["source_ids"],
            "pool class (id)": f"{r['pool_class']} ({r['pool_id']})",
        }
        for r in tables["remap"]
    ]
    n = sum(r["cases"] for r in tables["sampling"])
    return (
        f"pool: {n} cases from {len(rows)} datasets, {len(index['classes'])} classes, "
        f"spacing {index['spacing_xyz_mm'][0]} mm, patch {tuple(index['patch_size_zyx'])}\n\n"
        + markdown_table(rows, cols)
        + "\nlabel remapping (source ids -> pool class; other ids of the TotalSegmentator maps -> background):\n\n"
        + markdown_table(remap, list(remap[0]))
    )


def summarise(points: list[dict]) -> list[dict]:
    """Per (k, arm): Dice mean ± sd over seeds (of each seed's mean over the test patients), the sd over all
    (seed, patient) pairs, and the paired difference pretrained - from scratch per seed."""
    out = []
    for k in sorted({p["k"] for p in points}):
        by_arm = {
            a: sorted((p for p in points if p["k"] == k and p["arm"] == a), key=lambda p: p["seed"]) for a in ARMS
        }
        for arm in ARMS:
            runs = by_arm[arm]
            if not runs:
                continue
            means = np.array([r["mean_dice"] for r in runs])
            row = {
                "k": k,
                "arm": arm,
                "seeds": [r["seed"] for r in runs],
                "per_seed": means.tolist(),
                "mean": float(means.mean()),
                "sd": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
                "patient_sd": float(np.std([d for r in runs for d in r["dice"]])),
                "final_loss": float(np.mean([r["loss"][-1] for r in runs])),
                "train_s": float(np.mean([r["train_s"] for r in runs])),
            }
            if arm == "pretrained" and len(by_arm["from scratch"]) == len(runs):
                diff = means - np.array([r["mean_dice"] for r in by_arm["from scratch"]])
                row["diff_vs_scratch"] = diff.tolist()
            out.append(row)
    return out


def results_text(payload: dict) -> str:
    """The Markdown report: setting, pool table, results table, paired differences and timings."""
    a = payload["args"]
    pre = payload["pretrain_history"]
    rows = []
    for s in payload["summary"]:
        diff = s.get("diff_vs_scratch")
        rows.append(
            {
                "labelled patients": s["k"],
                "init": s["arm"],
                "test Dice mean ± sd (seeds)": f"{s['mean']:.3f} ± {s['sd']:.3f}",
                "per seed": " / ".join(f"{v:.3f}" for v in s["per_seed"]),
                "sd over patients": f"{s['patient_sd']:.3f}",
                "pretrained - scratch": ""
                if diff is None
                else f"{np.mean(diff):+.3f} ({' / '.join(f'{d:+.3f}' for d in diff)})",
                "final loss": f"{s['final_loss']:.3f}",
                "train s": f"{s['train_s']:.0f}",
            }
        )
    t = payload["times"]
    split = payload["split"]
    cand, test = split["candidates"], split["test"]
    return "\n".join(
        [
            f"TSFM transfer bench: preset {a['preset']}, patch {tuple(a['patch'])}, {a['spacing']} mm, batch "
            f"{a['batch_size']}, {a['optimizer']} lr {a['lr']}",
            f"pretraining: {a['pretrain_epochs']} epochs x {a['iters']} it on the pool "
            f"({'PET of ' + split['pool_pet'][0] + '-' + split['pool_pet'][-1] if split['pool_pet'] else 'no PET'}), "
            f"loss {pre[0]['loss']:.3f} -> {pre[-1]['loss']:.3f}, {t['pretrain_s']:.0f} s",
            f"transfer: {a['transfer_epochs']} epochs x {a['transfer_iters']} it for every run; patients drawn from "
            f"{cand[0]}-{cand[-1]} by the seed; test {test[0]}-{test[-1]}",
            "",
            markdown_table(rows, list(rows[0])),
            f"time: pools {t['pools_s']:.0f} s, pretraining {t['pretrain_s']:.0f} s, transfer + test "
            f"{t['transfer_s']:.0f} s, total {t['total_s']:.0f} s",
        ]
    )


def plot_dice(payload: dict, path: Path) -> None:
    """Test Dice vs labelled patients: mean ± sd over seeds per arm, each seed's mean as a dot."""
    plt = pyplot_agg()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, arm in enumerate(ARMS):
        rows = [s for s in payload["summary"] if s["arm"] == arm]
        ks = np.array([s["k"] for s in rows], dtype=float)
        off = (i - 0.5) * 0.12
        ax.errorbar(ks + off, [s["mean"] for s in rows], yerr=[s["sd"] for s in rows], marker="o", capsize=3, label=arm)
        for s in rows:
            ax.scatter(np.full(len(s["per_seed"]), s["k"] + off), s["per_seed"], s=10, alpha=0.5, color=f"C{i}")
    ax.set(xlabel="labelled PET patients", ylabel="test Dice (10 patients)", ylim=(0, 1), title="TSFM transfer")
    ax.set_xticks(sorted({s["k"] for s in payload["summary"]}))
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=100)


def plot_curves(payload: dict, path: Path) -> None:
    """Training loss per epoch: pretraining, and both transfer arms for each k (thin: seeds, thick: mean)."""
    plt = pyplot_agg()
    ks = sorted({p["k"] for p in payload["points"]})
    fig, axes = plt.subplots(1, 1 + len(ks), figsize=(3.6 * (1 + len(ks)), 3.2), squeeze=False)
    axes = axes[0]
    pre = payload["pretrain_history"]
    axes[0].plot([h["epoch"] for h in pre], [h["loss"] for h in pre], marker=".")
    axes[0].set(title="pretraining (pool)", xlabel="epoch", ylabel="BCE + Dice")
    for ax, k in zip(axes[1:], ks, strict=True):
        for i, arm in enumerate(ARMS):
            runs = [p["loss"] for p in payload["points"] if p["k"] == k and p["arm"] == arm]
            for loss in runs:
                ax.plot(range(1, len(loss) + 1), loss, color=f"C{i}", alpha=0.3, lw=0.8)
            if runs:
                ax.plot(range(1, len(runs[0]) + 1), np.mean(runs, axis=0), color=f"C{i}", lw=2, label=arm)
        ax.set(title=f"transfer, {k} patient{'s' if k > 1 else ''}", xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=100)

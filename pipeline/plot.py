"""Draw a plan's motion and prompt weights over time, with the beats marked, to a PNG."""

from __future__ import annotations

from pathlib import Path

from pipeline.schedule import Plan, lead


def plot_plan(plan: Plan, out: Path, title: str = "", aim: dict | None = None) -> Path:
    """Write a figure of zoom, rotate, pan and every prompt's weight against time; with `aim`
    (run.aim_settings), beside each weight, dotted, what the engine aims at to show it then
    (Plan.engine_aim)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [fp.t for fp in plan.frames]
    aims = plan.aim_weights(aim) if aim is not None else {}
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    panels = [
        ("zoom (per frame)", {"zoom": [fp.zoom for fp in plan.frames]}),
        ("rotate (°/frame)", {"rotate": [fp.rotate for fp in plan.frames]}),
        (
            "pan (px/frame)",
            {"x": [fp.pan_x for fp in plan.frames], "y": [fp.pan_y for fp in plan.frames]},
        ),
        (
            "prompt weights",
            {
                text: [dict(fp.prompts).get(text, 0.0) for fp in plan.frames]
                for text in plan.prompt_texts
            },
        ),
    ]
    for ax, (label, series) in zip(axes, panels, strict=True):
        for name, values in series.items():
            (line,) = ax.plot(t, values, label=name[:60], linewidth=1.5)
            if label == "prompt weights" and aims:
                ax.plot(t, aims[name], color=line.get_color(), linewidth=1.0, linestyle=":")
        ax.set_ylabel(label)
        for beat in plan.beat_times:
            ax.axvline(beat, color="tab:red", alpha=0.15, linewidth=0.8)
        for mark in plan.keyframes:
            ax.axvline(mark.t, color="black", alpha=0.5, linestyle="--", linewidth=0.8)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="upper right")
    aimed = ""
    if aim is not None:
        aimed = f"; dotted: a full render's aim, {lead(aim['steps'], aim['cadence'])} frames ahead"
    axes[-1].set_xlabel(f"time (s); dashed: keyframes, red: beats{aimed}")
    axes[0].set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

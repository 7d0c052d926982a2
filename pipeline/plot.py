"""Draw a plan's motion and prompt weights over time, with the beats marked, to a PNG."""

from __future__ import annotations

from pathlib import Path

from pipeline.schedule import Plan, lead


def plot_plan(plan: Plan, out: Path, title: str = "", aim: dict | None = None) -> Path:
    """Write a figure of zoom, rotate, pan (and the 3D camera's keys in a plan that moves it)
    and every prompt's weight against time; with `aim` (run.aim_settings), beside each
    weight, dotted, what the engine aims at to show it then (Plan.engine_aim)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [fp.t for fp in plan.frames]
    aims = plan.aim_weights(aim) if aim is not None else {}
    frames = plan.frames
    panels = [
        ("zoom (per frame)", {"zoom": [fp.zoom for fp in frames]}),
        ("rotate (°/frame)", {"rotate": [fp.rotate for fp in frames]}),
        ("pan (px/frame)", {"x": [fp.pan_x for fp in frames], "y": [fp.pan_y for fp in frames]}),
    ]
    if plan.camera_3d:
        # The 2D keys only where the storyboard moves them too; the 3D camera's, each in units
        # of its own (pixels at the middle distance; a fraction of it; degrees).
        defaults = {"zoom": 1.0, "rotate": 0.0, "x": 0.0, "y": 0.0}
        panels = [
            (label, series)
            for label, series in panels
            if any(v != defaults[name] for name, values in series.items() for v in values)
        ]
        panels += [
            (
                "translate x, y (px/frame)",
                {"x": [fp.translate[0] for fp in frames], "y": [fp.translate[1] for fp in frames]},
            ),
            ("translate z (/frame)", {"z": [fp.translate[2] for fp in frames]}),
            (
                "rotate_3d (°/frame)",
                {axis: [fp.rotate_3d[i] for fp in frames] for i, axis in enumerate("xyz")},
            ),
            ("fov (°)", {"fov": [fp.fov for fp in frames]}),
        ]
    panels.append(
        (
            "prompt weights",
            {
                text: [dict(fp.prompts).get(text, 0.0) for fp in plan.frames]
                for text in plan.prompt_texts
            },
        )
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.5 * len(panels)), sharex=True)
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

"""The feverdream command line: parses arguments and wires the pipeline's parts together.

Heavy modules (torch, librosa, ffmpeg) are imported inside the verbs that need them, so
that `validate` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline import __version__, cli_batch, cli_models, cli_score, cli_studio, cli_tiktok
from pipeline.errors import FeverdreamError

log = logging.getLogger(__name__)


# --- verbs -------------------------------------------------------------------------------
# Each verb is a function `cmd_<verb>(args) -> int` (an exit status); each group of verbs
# has an `_add_<group>_verbs(sub)` function that declares its arguments.


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline import run

    print(f"{args.storyboard}: {run.validated(run.load(args.storyboard))}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from pipeline import run

    story = run.load(args.storyboard)
    board, plan = story.board, story.plan
    if args.json:
        print(json.dumps(plan.to_json(), ensure_ascii=False, indent=1))
    else:
        print(f"{board.title}: {plan.duration:.2f}s, {board.fps} fps, {plan.n_frames} frames")
        print(run.plan_table(story, every_frame=args.frames))
    if args.plot:
        run.plot(story, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _frame_range(text: str | None, n_frames: int) -> tuple[int, int] | None:
    """`--frames A:B`: frames A to B-1 (either side may be left out)."""
    if text is None:
        return None
    start_text, sep, end_text = text.partition(":")
    try:
        start, end = int(start_text or 0), int(end_text) if end_text else n_frames
    except ValueError:
        start, end = -1, -1
    if not sep or not 0 <= start < end <= n_frames:
        raise FeverdreamError(
            f"--frames {text}: give A:B, frames A to B-1 with 0 <= A < B <= {n_frames} "
            "(this storyboard's frame count); either side may be left out"
        )
    return start, end


def cmd_render(args: argparse.Namespace) -> int:
    import dataclasses
    import signal
    from pathlib import Path

    from tqdm import tqdm

    from pipeline import run

    story = run.load(args.storyboard)
    span = _frame_range(args.frames, story.plan.n_frames)
    if args.depth and not story.board.camera_3d:
        log.warning("--depth %s: %s moves no 3D camera (no translate, rotate_3d or fov key), "
                    "so no depth model is read", args.depth, args.storyboard)  # fmt: skip
    if args.post:
        run.check_can_post(
            args.post, caption=story.board.caption or "", **cli_tiktok.post_options(args)
        )
    device = run.pick_device(args.device, option="--device")
    options = run.RenderOptions(
        output=Path(args.output) if args.output else None,
        preview=args.preview,
        frames=span,
        fresh=args.fresh,
        device=device,
        encode_while_rendering={"auto": None, "during": True, "after": False}[args.encode],
        memory=args.memory,
        **cli_batch.chosen_models(args),
    )
    cadence = run.render_settings(story, options).cadence
    options = dataclasses.replace(
        options, speed=_speed(args, device, cadence), compile=_compile_option(args)
    )
    if args.engine == "classic":
        options = dataclasses.replace(options, execution=run.execution("classic"))
    bars: dict[str, tqdm] = {}
    now = {"stage": "", "stop asked": False}

    def show(progress: run.Progress) -> None:
        stage = bars.get(progress.stage)
        if progress.stage != now["stage"] or progress.done < stage.n:  # or a download's next file
            now["stage"] = progress.stage
            for bar in bars.values():
                bar.close()
            if progress.stage == "encoding":
                frames_dir = run.frames_folder(story, options)
                print(f"frames: {frames_dir} ({progress.total} frame{'s' * (progress.total != 1)})")
            bars[progress.stage] = tqdm(
                total=progress.total or None,
                initial=progress.done,
                unit=progress.unit,
                unit_scale=progress.stage == "download",
                desc=progress.stage,
            )
        bar = bars[progress.stage]
        bar.update(progress.done - bar.n)
        if progress.loss is not None:
            bar.set_postfix(loss=f"{progress.loss:.3f}")

    def on_interrupt(signum, frame):
        # Between frames a Ctrl-C stops after the frame being made; anything else (a
        # download, loading models, encoding, a second Ctrl-C) stops at once.
        if now["stage"] != "frames" or now["stop asked"]:
            raise KeyboardInterrupt
        now["stop asked"] = True
        log.warning("stopping after the current frame is saved (Ctrl-C again to stop now)")

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = run.render(story, options, on_progress=show, should_stop=lambda: now["stop asked"])
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        for bar in bars.values():
            bar.close()
    if result.stopped:
        print(
            f"stopped after {result.frames_done} of {result.frames_total} frames, all saved in "
            f"{result.frames_dir}; run the same command to continue",
            file=sys.stderr,
        )
        return 130
    print(f"video: {result.video}")
    if args.post:
        return cli_tiktok.post(args, str(result.video), args.post, story.board.caption or "")
    return 0


def _speed(args: argparse.Namespace, device: str, cadence: int):
    """The engine's speed options: the fast defaults, or the classic loop, as asked."""
    from pipeline import run

    return run.speed(args.engine, device, cadence, args.precision, args.latent_warp)


def _execution(args: argparse.Namespace, device: str, speed):
    """How the bench's engine computes: as a render's (Execution.fast, or the classic loop's
    with --engine classic), compiled only with --compile on (a render decides from its
    length)."""
    from pipeline import run

    return run.execution(args.engine, device, speed, compile=args.compile == "on")


def _compile_option(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.compile]


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["fast", "classic"],
        default="fast",
        help="fast (default): the storyboard's cadence, bf16 where native; "
        "classic: every frame optimised, in fp32, like the peers",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the VQGAN's precision; auto = bf16 on CPUs with native bf16 (AVX-512 BF16, AMX)",
    )
    p.add_argument(
        "--latent-warp",
        action="store_true",
        help="move the latents instead of the picture (skips the encoder; softer motion)",
    )
    p.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the decoder through torch.compile (its first step takes a minute); auto = on "
        "a GPU for renders long enough to earn it back, never on a CPU, where it was slower",
    )


def _size(text: str) -> tuple[int, int]:
    from pipeline import run

    try:
        width, height = run.parse_size(text)
        if width % 16 or height % 16:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: give WIDTHxHEIGHT, multiples of 16") from None
    return width, height


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from pipeline import run

    device = run.pick_device(args.device, option="--device")
    story = run.load(args.storyboard) if args.storyboard else None
    cadence = args.cadence or run.bench_settings(story).cadence
    speeds = {"this render": _speed(args, device, cadence)}
    executions = {"this render": _execution(args, device, speeds["this render"])}
    if args.compare:
        speeds["classic"] = run.speed("classic")  # after the default: it keeps the most memory
    # One run per CLIP named (or the storyboard's CLIPs), the same VQGAN and settings.
    measured = {}
    for clip in args.clip or [None]:
        measured[clip] = run.bench(
            story,
            speeds,
            device,
            size=args.size,
            steps=args.steps,
            cuts=args.cuts,
            vqgan=args.vqgan,
            clip=clip,
            repeats=args.repeats,
            warmup=args.warmup,
            executions=executions,
            **({"depth": args.depth} if args.depth else {}),
        )
    if args.json:
        figures = {
            clip: {label: result.to_json() for label, result in results.items()}
            for clip, results in measured.items()
        }
        print(json.dumps(figures if len(figures) > 1 else figures[next(iter(figures))], indent=1))
        return 0
    for clip, results in measured.items():
        _print_bench(args, results, f"{clip} · " if len(measured) > 1 else "")
    if len(measured) > 1:
        first, *others = measured
        base = measured[first]["this render"].timings.step
        for clip in others:
            ratio = measured[clip]["this render"].timings.step / base
            print(f"a step with {clip}: {ratio:.2f}x the time of one with {first}")
    return 0


def _print_bench(args: argparse.Namespace, results: dict, prefix: str) -> None:
    from pipeline import run

    for label, result in sorted(results.items(), key=lambda item: item[0] != "classic"):
        print(f"== {prefix}{label}")
        print(run.describe_bench(result))
        if "projection" in result.extra:
            p = result.extra["projection"]
            print(
                f"projected render of {args.storyboard}: {p['frames']} frames "
                f"({p['optimised_frames']} optimised) in {p['total_seconds'] / 60:.1f} min "
                f"({p['engine_seconds'] / 60:.1f} engine and {p['encode_seconds'] / 60:.1f} "
                f"encoding at {p['encode_seconds_per_frame']:.2f} s a frame, measured here on "
                f"noise: an upper bound; encoded {'while' if p['encoding_during'] else 'after'} "
                f"the frames are made; {p['total_seconds_encoding_during'] / 60:.1f} min while, "
                f"{p['total_seconds_encoding_after'] / 60:.1f} after)"
            )
    if args.compare:
        classic, fast = results["classic"], results["this render"]
        gain = fast.frames_per_hour / classic.frames_per_hour
        print(f"frames per hour: {gain:.2f}x the classic loop")
        # The line to set beside a peer's figure (issue 26 compares at 288x512, 16
        # cutouts, 10 steps: `--size 288x512 --cuts 16 --steps 10`).
        s = fast.settings
        print(
            f"{prefix}peer-comparable, {s['width']}x{s['height']}, {s['cuts']} cutouts, "
            f"{s['steps']} steps: classic {classic.frames_per_hour:.1f} frames/hour "
            f"(peak {classic.peak_memory_gib:.2f} GiB), default {fast.frames_per_hour:.1f} "
            f"frames/hour (peak {fast.peak_memory_gib:.2f} GiB), {gain:.2f}x"
        )


def _add_bench_verb(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the engine's speed here with random full-size weights",
        description="Builds the storyboard's (or the default) full-size models with random "
        "weights, which cost the same compute as trained ones, and times a step, a frame, "
        "and a whole render.",
    )
    p.add_argument("--storyboard", metavar="FILE", help="use its models and settings; project it")
    p.add_argument("--size", type=_size, metavar="WxH", help="engine canvas (default 288x512)")
    p.add_argument("--cuts", type=int, help="CLIP cutouts per step (default 32)")
    p.add_argument("--steps", type=int, help="steps per optimised frame (default 10)")
    p.add_argument("--cadence", type=int, help="optimise every k-th frame (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--vqgan", metavar="NAME", help="VQGAN architecture (registry name)")
    p.add_argument(
        "--clip",
        metavar="NAME",
        action="append",
        help="CLIP architecture (registry name); give it again to measure each in one run",
    )
    p.add_argument(
        "--depth",
        metavar="NAME",
        help="also time the 3D camera with this depth model (default: the storyboard's, "
        "when it moves the 3D camera), e.g. depth-anything-v2-small",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each part (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--compare", action="store_true", help="also time the classic loop")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_engine_options(p)
    p.set_defaults(func=cmd_bench)


STORYBOARD_HELP = "the storyboard, a YAML file (e.g. storyboards/anxiety.yaml)"


def _add_storyboard_verbs(sub: argparse._SubParsersAction) -> None:
    """validate, plan, render."""
    p = sub.add_parser("validate", help="check a storyboard; exit 2 with FILE:LINE errors")
    p.add_argument("storyboard", help=STORYBOARD_HELP)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show what every frame will be, before rendering")
    p.add_argument("storyboard", help=STORYBOARD_HELP)
    p.add_argument("--json", action="store_true", help="the plan as JSON, one object per frame")
    p.add_argument("--frames", action="store_true", help="one row per frame, not per keyframe")
    p.add_argument("--plot", metavar="FILE.png", help="draw motion and prompt weights over time")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("render", help="render a storyboard's frames and its TikTok-ready MP4")
    p.add_argument("storyboard", help=STORYBOARD_HELP)
    p.add_argument("-o", "--output", metavar="DIR", help="render into DIR (default outputs/NAME)")
    p.add_argument(
        "--preview",
        action="store_true",
        help="a quick look: a quarter of the canvas area, a third of the steps, into .../preview/",
    )
    p.add_argument(
        "--frames", metavar="A:B", help="render frames A to B-1 only, into their own folder"
    )
    p.add_argument("--fresh", action="store_true", help="start over, replacing frames already made")
    p.add_argument(
        "--encode",
        choices=["auto", "during", "after"],
        default="auto",
        help="make the MP4 while the frames are made, or after them (auto: during on a GPU)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    cli_batch.add_memory_option(p, per="on the device")
    cli_batch.add_model_options(p, "storyboard's")
    _add_engine_options(p)
    p.add_argument(
        "--post",
        nargs="?",
        const="draft",
        choices=["draft", "direct"],
        help="post the video to TikTok when it is done (default: draft)",
    )
    cli_tiktok.add_post_options(p)
    p.set_defaults(func=cmd_render)


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline import run

    checked = run.check(args.video, max_duration=args.max_duration)
    print(checked.summary)
    if checked.accepted:
        print("TikTok accepts this file")
        return 0
    print("TikTok would reject this file; to fix it:")
    for problem in checked.problems:
        print(f"  - {problem}")
    return 1


def _add_check_verb(sub: argparse._SubParsersAction) -> None:
    """check VIDEO."""
    p = sub.add_parser("check", help="does TikTok accept this video file? what to change")
    p.add_argument("video")
    p.add_argument(
        "--max-duration",
        type=float,
        metavar="SECONDS",
        help="your account's own limit, if below TikTok's 10 minutes",
    )
    p.set_defaults(func=cmd_check)


def cmd_examples(args: argparse.Namespace) -> int:
    from pipeline import run

    copied = run.copy_examples(args.folder)
    for path in copied.kept:
        print(f"kept your {path} (it differs from the example; remove it to get the example back)")
    folder = copied.folder / "storyboards"
    print(f"{len(copied.written)} files written; the example storyboards are in {folder}:")
    for path in run.example_storyboards().values():
        own = set(run.models_named(path)) == {"shapes"}
        note = "  (the shapes models: nothing to download)" if own else ""
        print(f"  feverdream render {folder / path.name}{note}")
    print(f"or all of them in the browser: feverdream studio {folder}")
    return 0


def _add_examples_verb(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "examples",
        help="copy the example storyboards, their pictures and soundtracks into a folder",
        description="Writes FOLDER/storyboards/ (the examples and their pictures) and "
        "FOLDER/audio/ (their soundtracks, free to use); files of yours already there are kept.",
    )
    p.add_argument("folder", nargs="?", default=".", help="where to put them (default: .)")
    p.set_defaults(func=cmd_examples)


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feverdream",
        description="Turn a YAML storyboard into a vertical VQGAN+CLIP video for TikTok.",
    )
    parser.add_argument("--version", action="version", version=f"feverdream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    # Not required: without a verb, main prints the help rather than an argparse error.
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_storyboard_verbs(sub)
    cli_models.add_verbs(sub)
    _add_check_verb(sub)
    _add_examples_verb(sub)
    cli_tiktok.add_verbs(sub)
    _add_bench_verb(sub)
    cli_score.add_verbs(sub)
    cli_batch.add_verbs(sub)
    cli_studio.add_verbs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    if argv is None and args.verb in ("render", "bench", "batch"):
        from pipeline.cli_malloc import restart_with_tuning

        restart_with_tuning()
    # Our own modules log at INFO; libraries only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except FeverdreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

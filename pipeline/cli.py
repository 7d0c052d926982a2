"""The feverdream command line: parses arguments and wires the pipeline's parts together.

Heavy modules (torch, librosa, ffmpeg) are imported inside the verbs that need them, so
that `validate` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline import __version__
from pipeline.errors import FeverdreamError

log = logging.getLogger(__name__)


# --- verbs -------------------------------------------------------------------------------
# Each verb is a function `cmd_<verb>(args) -> int` (an exit status); each group of verbs
# has an `_add_<group>_verbs(sub)` function that declares its arguments.


def load_plan(path: str):
    """Storyboard → soundtrack analysis → plan; every problem is a FILE:LINE error."""
    from pipeline.schedule import build_plan
    from pipeline.storyboard import load_storyboard

    board = load_storyboard(path)
    features = None
    if board.audio is not None:
        from pipeline import audio

        try:
            features = audio.analyse(board.audio.path, board.fps, board.audio.offset)
        except audio.AudioError as error:
            raise board.audio.where.error(str(error)) from None
    return board, features, build_plan(board, features)


def cmd_validate(args: argparse.Namespace) -> int:
    board, _, plan = load_plan(args.storyboard)
    print(
        f"{args.storyboard}: ok: '{board.title}', {plan.duration:.2f}s at {board.fps} fps "
        f"({plan.n_frames} frames), {len(board.keyframes)} keyframes"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from pipeline.schedule import format_table

    board, _, plan = load_plan(args.storyboard)
    if args.json:
        print(json.dumps(plan.to_json(), ensure_ascii=False, indent=1))
    else:
        print(f"{board.title}: {plan.duration:.2f}s, {board.fps} fps, {plan.n_frames} frames")
        print(format_table(plan, every_frame=args.frames))
    if args.plot:
        from pathlib import Path

        from pipeline.plot import plot_plan

        plot_plan(plan, Path(args.plot), title=board.title)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _pick_device(requested: str | None) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise FeverdreamError(
            "--device cuda: no CUDA GPU is visible to torch here; use --device cpu"
        )
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def _frame_range(text: str | None, n_frames: int) -> tuple[int, int] | None:
    """`--frames A:B`: frames A to B-1 (either side may be left out)."""
    if text is None:
        return None
    start_text, sep, end_text = text.partition(":")
    try:
        start = int(start_text) if start_text else 0
        end = int(end_text) if end_text else n_frames
    except ValueError:
        start = end = -1
    if not sep or not 0 <= start < end <= n_frames:
        raise FeverdreamError(
            f"--frames {text}: give A:B with 0 <= A < B <= {n_frames} (frames A to B-1)"
        )
    return start, end


def _preview_settings(render):
    """A quarter of the canvas area and a third of the steps, for a quick look."""
    import dataclasses

    def multiple_of_16(side: float) -> int:
        return max(16, int(side / 16 + 0.5) * 16)

    width = multiple_of_16(render.width / 2)
    return dataclasses.replace(
        render,
        width=width,
        height=multiple_of_16(width * render.height / render.width),
        steps=-(-render.steps // 3),
        first_steps=-(-render.first_steps // 3),
    )


def cmd_render(args: argparse.Namespace) -> int:
    import dataclasses
    import signal
    import time
    from pathlib import Path

    board, _, plan = load_plan(args.storyboard)
    render_settings = _preview_settings(board.render) if args.preview else board.render
    folder = Path(args.output) if args.output else Path("outputs") / board.name
    if args.preview:
        folder = folder / "preview"
    span = _frame_range(args.frames, plan.n_frames)
    if span is not None:
        start, end = span
        folder = folder / f"frames-{start}-{end}"
        frames = tuple(
            dataclasses.replace(fp, frame=i) for i, fp in enumerate(plan.frames[start:end])
        )
        plan = dataclasses.replace(plan, frames=frames)
    if args.post:
        from pipeline import tiktok

        tiktok.check_can_post(args.post, caption=board.caption or "", **_tiktok_post_options(args))

    from pipeline import render

    soundtrack = None
    if board.audio is not None:
        offset = board.audio.offset + (span[0] / board.fps if span else 0.0)
        soundtrack = render.SoundtrackSpec(
            board.audio.path, offset, board.audio.fade_in, board.audio.fade_out
        )
        try:
            render.check_soundtrack(soundtrack)
        except FeverdreamError as error:
            raise board.audio.where.error(str(error)) from None

    from pipeline.engine import Engine, EngineSettings, render_frames
    from pipeline.models.registry import load_models
    from pipeline.store import FrameStore

    device = _pick_device(args.device)
    vqgan_name = args.vqgan or args.models or _beside(board, board.models.vqgan)
    clip_name = args.clip or args.models or _beside(board, board.models.clip)
    if not args.random_weights:
        from pipeline.models.download import ensure_downloaded

        for name in (vqgan_name, clip_name):
            ensure_downloaded(name)
    vqgan, clip = load_models(vqgan_name, clip_name, device, random_weights=args.random_weights)
    settings = EngineSettings.for_render(
        render_settings, board.seed, device, **_speed_options(args, device, render_settings.cadence)
    )
    models = {
        "vqgan": {"name": vqgan_name, "sha256": _checksum(vqgan, args.random_weights)},
        "clip": {"name": clip_name, "sha256": _checksum(clip, args.random_weights)},
    }
    store = FrameStore(folder)
    stop = {"asked": False}

    def on_interrupt(signum, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        log.warning("stopping after the current frame is saved (Ctrl-C again to stop now)")

    started = time.perf_counter()
    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = render_frames(
            plan,
            Engine(vqgan, clip, settings),
            store,
            describe={"models": models},
            fresh=args.fresh,
            should_stop=lambda: stop["asked"],
        )
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    if result.stopped:
        print(
            f"stopped after {result.frames_done} of {result.frames_total} frames, all saved in "
            f"{store.frames_dir}; run the same command to continue",
            file=sys.stderr,
        )
        return 130
    print(f"frames: {store.frames_dir} ({result.frames_total} frames)")

    name = board.name if span is None else f"{board.name}-{span[0]}-{span[1]}"
    spec = render.VideoSpec(
        fps=board.fps,
        size=(540, 960) if args.preview else (board.width, board.height),
        audio=soundtrack,
        content_warning=board.content_warning if span is None else None,
        content_warning_duration=board.content_warning_duration,
    )
    frame_paths = [store.frame_path(i) for i in range(plan.n_frames)]
    video = render.encode_video(frame_paths, plan.n_frames, spec, folder / f"{name}.mp4")
    marks = [m for m in plan.keyframes if span is None and m.frame < plan.n_frames]
    if marks:
        render.contact_sheet(
            [(store.frame_path(m.frame), m.t, m.label) for m in marks], folder / "contact.png"
        )
    render.preview_gif(frame_paths, board.fps, folder / "preview.gif")
    render.write_render_json(
        folder / "render.json",
        render.RenderRecord(
            storyboard_sha256=board.sha256,
            seed=board.seed,
            models=models,
            device=device,
            frames=[
                render.FrameRecord(i, r.seconds, r.loss) for i, r in sorted(result.records.items())
            ],
            total_seconds=time.perf_counter() - started,
        ),
    )
    print(f"video: {video}")
    if args.post:
        return _tiktok_post(args, str(video), args.post, board.caption or "")
    return 0


def _speed_options(args: argparse.Namespace, device: str, cadence: int) -> dict:
    """The engine's speed options: the fast defaults, or the classic loop, as asked."""
    from pipeline.engine import CLASSIC_OPTIONS, fast_options

    options = dict(CLASSIC_OPTIONS) if args.engine == "classic" else fast_options(device, cadence)
    if args.precision != "auto":
        options["bf16"] = args.precision == "bf16"
    if args.latent_warp:
        options["latent_warp"] = True
    return options


def _beside(board, name: str) -> str:
    """A model file named in a storyboard is relative to the storyboard, like its audio."""
    candidate = board.path.parent / name
    return str(candidate) if candidate.is_file() else name


def _checksum(model, random_weights: bool) -> str:
    if random_weights:
        return "random weights"
    return ", ".join(sorted(set(model.checksums.values()))) or "unknown"


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["fast", "classic"],
        default="fast",
        help="fast (default): the storyboard's cadence, carried Adam, bf16 where native; "
        "classic: every frame optimised in fp32 from a fresh Adam, like the peers",
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


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) % 16 or int(height) % 16:
        raise argparse.ArgumentTypeError(f"{text}: give WIDTHxHEIGHT, multiples of 16")
    return int(width), int(height)


def cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from pipeline import bench
    from pipeline.engine import Engine, EngineSettings
    from pipeline.models.registry import load_models
    from pipeline.storyboard import Models, RenderSettings

    board = plan = None
    render_settings, models = RenderSettings(), Models()
    if args.storyboard:
        board, _, plan = load_plan(args.storyboard)
        render_settings, models = board.render, board.models
    width, height = args.size or (render_settings.width, render_settings.height)
    device = _pick_device(args.device)
    vqgan, clip = load_models(
        args.vqgan or models.vqgan, args.clip or models.clip, device, random_weights=True
    )
    cadence = args.cadence or render_settings.cadence
    base = EngineSettings(
        width=width,
        height=height,
        steps=args.steps or render_settings.steps,
        first_steps=render_settings.first_steps,
        cuts=args.cuts or render_settings.cuts,
        lr=render_settings.lr,
        seed=0,
        device=device,
    )
    engines = {"this render": _speed_options(args, device, cadence)}
    if args.compare:
        from pipeline.engine import CLASSIC_OPTIONS

        engines = {"classic": CLASSIC_OPTIONS, **engines}
    results = {}
    for label, options in engines.items():
        settings = dataclasses.replace(base, **options)
        result = bench.run_bench(Engine(vqgan, clip, settings), args.repeats, args.warmup)
        if plan is not None:
            result.extra["projection"] = bench.project(plan, result.timings, settings)
        results[label] = result
    if args.json:
        print(json.dumps({k: r.to_json() for k, r in results.items()}, indent=1))
        return 0
    for label, result in results.items():
        print(f"== {label}")
        print(bench.describe(result))
        if "projection" in result.extra:
            p = result.extra["projection"]
            print(
                f"projected render of {args.storyboard}: {p['frames']} frames "
                f"({p['optimised_frames']} optimised) in {p['total_seconds'] / 60:.1f} min "
                f"({p['engine_seconds'] / 60:.1f} engine + {p['encode_seconds'] / 60:.1f} encoding)"
            )
    if args.compare:
        gain = results["this render"].frames_per_hour / results["classic"].frames_per_hour
        print(f"frames per hour: {gain:.2f}x the classic loop")
    return 0


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
    p.add_argument("--clip", metavar="NAME", help="CLIP architecture (registry name)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each part (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--compare", action="store_true", help="also time the classic loop")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_engine_options(p)
    p.set_defaults(func=cmd_bench)


def _add_storyboard_verbs(sub: argparse._SubParsersAction) -> None:
    """validate, plan, render."""
    p = sub.add_parser("validate", help="check a storyboard; exit 2 with FILE:LINE errors")
    p.add_argument("storyboard")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show what every frame will be, before rendering")
    p.add_argument("storyboard")
    p.add_argument("--json", action="store_true", help="the plan as JSON, one object per frame")
    p.add_argument("--frames", action="store_true", help="one row per frame, not per keyframe")
    p.add_argument("--plot", metavar="FILE.png", help="draw motion and prompt weights over time")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("render", help="render a storyboard's frames and its TikTok-ready MP4")
    p.add_argument("storyboard")
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
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--models", metavar="NAME", help="use NAME for both VQGAN and CLIP (e.g. tiny)")
    p.add_argument("--vqgan", metavar="NAME", help="override the storyboard's VQGAN")
    p.add_argument("--clip", metavar="NAME", help="override the storyboard's CLIP")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="the named architectures with random weights (abstract noise; for benchmarks)",
    )
    _add_engine_options(p)
    p.add_argument(
        "--post",
        nargs="?",
        const="draft",
        choices=["draft", "direct"],
        help="post the video to TikTok when it is done (default: draft)",
    )
    _add_tiktok_post_options(p)
    p.set_defaults(func=cmd_render)


def _size_text(size: int | None, present: bool) -> str:
    if size is None:
        return "?"
    text = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    return text if present else f"~{text}"


def cmd_models_list(args: argparse.Namespace) -> int:
    from pipeline.models import registry

    print(f"models folder: {registry.models_dir()} (set FEVERDREAM_MODELS to move it)")
    for kind, title in (("vqgan", "VQGAN"), ("clip", "CLIP")):
        print(f"\n{title:26} {'size':>10}  {'status':8} notes / path")
        for row in registry.status(kind):
            state = "present" if row.present else "missing"
            if row.source is registry.Source.BUILT and not row.present:
                state = "on use"
            print(f"{row.name:26} {_size_text(row.size, row.present):>10}  {state:8} {row.notes}")
            if row.present:
                for path in row.paths:
                    print(f"{'':46} {path}")
    print(f"\n{registry.RANDOM_WEIGHTS_NOTE}")
    return 0


def cmd_models_download(args: argparse.Namespace) -> int:
    from pipeline.models.download import download

    failed = 0
    for name in args.names:
        try:
            for path in download(name):
                print(path)
        except FeverdreamError as error:
            # Go on with the other names; one dead link should not block the rest.
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from pipeline.models.registry import model_paths

    for path in model_paths(args.name):
        print(path)
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.models.registry import models_dir

    build = _shapes_recipe()
    into = Path(args.output) if args.output else models_dir() / "shapes-build"
    build.main(into)
    return 0


def _shapes_recipe():
    """The shapes world's recipe (tools/shapes/build.py), which lives in the source checkout
    beside the package rather than in it."""
    import importlib
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "tools" / "shapes" / "build.py").is_file():
        raise FeverdreamError(
            "the shapes recipe is not installed with the package: it lives in the source "
            "checkout (tools/shapes/); run `feverdream models build shapes` from a clone of "
            "the repository with feverdream installed from it (`make setup`)"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return importlib.import_module("tools.shapes.build")


def _add_models_verbs(sub: argparse._SubParsersAction) -> None:
    """models list|download|path|build."""
    models = sub.add_parser(
        "models",
        help="list, download and locate VQGAN and CLIP checkpoints",
        description="Model files live in the models folder: FEVERDREAM_MODELS, else your "
        "user cache. `tiny` needs no download (random weights: abstract noise, not art); "
        "`shapes`, trained by feverdream on drawn shapes, ships with the package, and "
        "`models build shapes` trains it again from its recipe.",
    )
    verbs = models.add_subparsers(dest="models_verb", metavar="ACTION", required=True)

    p = verbs.add_parser("list", help="what is known, what is downloaded, sizes and paths")
    p.set_defaults(func=cmd_models_list)

    p = verbs.add_parser("download", help="fetch models into the models folder (resumable)")
    p.add_argument("names", nargs="+", metavar="NAME", help="e.g. vqgan_imagenet_f16_16384")
    p.set_defaults(func=cmd_models_download)

    p = verbs.add_parser("path", help="where a model's files are; fails if not downloaded")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_models_path)

    p = verbs.add_parser(
        "build",
        help="train the `shapes` models again from their recipe (about 30 min on a 2-core CPU) "
        "and say how far they are from the ones the package ships",
    )
    p.add_argument("name", choices=["shapes"], help="the models feverdream trains itself")
    p.add_argument(
        "-o", "--output", metavar="DIR", help="where to write them (default: MODELS/shapes-build)"
    )
    p.set_defaults(func=cmd_models_build)


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.check import find_problems, probe_video

    info = probe_video(Path(args.video))
    print(info.summary())
    problems = find_problems(info, max_duration_s=args.max_duration)
    if not problems:
        print("TikTok accepts this file")
        return 0
    print("TikTok would reject this file; to fix it:")
    for problem in problems:
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


def _tiktok_say(line: str) -> None:
    # Flushed at once: `tiktok login` waits on the user right after printing the link.
    print(line, flush=True)


def cmd_tiktok_login(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    tiktok.login(port=args.port, open_browser=not args.no_browser, say=_tiktok_say)
    return 0


def cmd_tiktok_whoami(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    tiktok.whoami(say=_tiktok_say)
    return 0


def cmd_tiktok_logout(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    tiktok.logout(say=_tiktok_say)
    return 0


def _tiktok_post_options(args: argparse.Namespace) -> dict:
    """The options `_add_tiktok_post_options` declared, as keywords of `tiktok.post_video` and
    `tiktok.check_can_post` (which `render --post` calls before rendering)."""
    return {
        "privacy": args.privacy,
        "disable_comment": args.disable_comment,
        "disable_duet": args.disable_duet,
        "disable_stitch": args.disable_stitch,
        "cover_ms": args.cover_ms,
        "yes": args.yes,
    }


def _tiktok_post(args: argparse.Namespace, video: str, mode: str, caption: str) -> int:
    """Post `video` as `mode` ("draft" or "direct"); the `tiktok post` verb and
    `render --post` both end here."""
    from pipeline import tiktok

    tiktok.post_video(
        video,
        mode=mode,
        caption=caption,
        wait=not args.no_wait,
        say=_tiktok_say,
        **_tiktok_post_options(args),
    )
    return 0


def cmd_tiktok_post(args: argparse.Namespace) -> int:
    return _tiktok_post(args, args.video, args.mode, args.caption)


def cmd_tiktok_status(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    status = tiktok.post_status(args.publish_id, say=_tiktok_say)
    return 1 if status.status == "FAILED" else 0


def _add_tiktok_post_options(p: argparse.ArgumentParser) -> None:
    """How a post goes out, shared by `tiktok post` and `render --post`."""
    p.add_argument(
        "--privacy",
        metavar="LEVEL",
        help="direct posts: PUBLIC_TO_EVERYONE, MUTUAL_FOLLOW_FRIENDS, FOLLOWER_OF_CREATOR or "
        "SELF_ONLY, as your account offers (no default; unaudited apps: SELF_ONLY)",
    )
    # TikTok's rules: interactions start off, so each is an opt-in; --no-X states the default.
    for flag in ("comment", "duet", "stitch"):
        switch = p.add_mutually_exclusive_group()
        switch.add_argument(
            f"--allow-{flag}",
            dest=f"disable_{flag}",
            action="store_const",
            const=False,
            help=f"direct posts: others can {flag} (off unless given)",
        )
        switch.add_argument(
            f"--no-{flag}",
            dest=f"disable_{flag}",
            action="store_const",
            const=True,
            help=f"direct posts: nobody can {flag} (the default)",
        )
    p.add_argument("--cover-ms", type=int, metavar="N", help="direct posts: cover frame at N ms")
    p.add_argument("--yes", action="store_true", help="direct posts: do not ask to confirm")
    p.add_argument(
        "--no-wait", action="store_true", help="return after the upload, not the final status"
    )


def _add_tiktok_verbs(sub: argparse._SubParsersAction) -> None:
    """tiktok login|logout|whoami|post|status."""
    tiktok = sub.add_parser(
        "tiktok",
        help="log in to TikTok and post videos",
        description="Needs your own TikTok app: export TIKTOK_CLIENT_KEY and TIKTOK_CLIENT_SECRET.",
    )
    verbs = tiktok.add_subparsers(dest="tiktok_verb", metavar="ACTION", required=True)

    p = verbs.add_parser("login", help="log in through the browser (PKCE, local callback)")
    p.add_argument(
        "--port", type=int, default=3455, help="callback port on 127.0.0.1 (default 3455)"
    )
    p.add_argument("--no-browser", action="store_true", help="print the link, do not open it")
    p.set_defaults(func=cmd_tiktok_login)

    p = verbs.add_parser("whoami", help="who is logged in, with which permissions")
    p.set_defaults(func=cmd_tiktok_whoami)

    p = verbs.add_parser("logout", help="revoke the login and delete the token")
    p.set_defaults(func=cmd_tiktok_logout)

    p = verbs.add_parser("post", help="upload a video as a draft, or post it directly")
    p.add_argument("video")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--draft",
        dest="mode",
        action="store_const",
        const="draft",
        help="send to your TikTok inbox to finish in the app (the default)",
    )
    mode.add_argument(
        "--direct", dest="mode", action="store_const", const="direct", help="publish now"
    )
    p.set_defaults(mode="draft")
    p.add_argument("--caption", default="", help="direct posts: the caption (#tags, @mentions)")
    _add_tiktok_post_options(p)
    p.set_defaults(func=cmd_tiktok_post)

    p = verbs.add_parser("status", help="where a post stands")
    p.add_argument("publish_id")
    p.set_defaults(func=cmd_tiktok_status)


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feverdream",
        description="Turn a YAML storyboard into a vertical VQGAN+CLIP video for TikTok.",
    )
    parser.add_argument("--version", action="version", version=f"feverdream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_storyboard_verbs(sub)
    _add_models_verbs(sub)
    _add_check_verb(sub)
    _add_tiktok_verbs(sub)
    _add_bench_verb(sub)
    return parser


# glibc's malloc hands the engine's large activation buffers back to the system after every
# step and maps them again on the next; raising its thresholds keeps them, about 24% faster
# per step on CPU (../bench/RESULTS.md). It must be set before the process starts.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def _restart_with_malloc_tuning(args: argparse.Namespace) -> None:
    """Run the heavy verbs again in a process with the malloc setting (once; skippable)."""
    import os
    import platform

    if (
        args.verb not in ("render", "bench")
        or "GLIBC_TUNABLES" in os.environ
        or os.environ.get("FEVERDREAM_MALLOC_TUNING") == "0"
        or platform.libc_ver()[0] != "glibc"
    ):
        return
    environment = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}
    os.execve(sys.executable, [sys.executable, "-m", "pipeline", *sys.argv[1:]], environment)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:
        _restart_with_malloc_tuning(args)
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

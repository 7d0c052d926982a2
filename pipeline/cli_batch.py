"""`feverdream batch`: many storyboards, and the shots of each, on a Ray cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline import cli_tiktok

_UNITS = {"b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}  # fmt: skip


def memory_amount(text: str) -> int:
    """An amount of memory as a person writes it, with its unit: 6GB, 6 GiB, 500MB, 6g."""
    number = text.strip().rstrip("bBiIkKmMgGtT ")
    unit = text.strip()[len(number) :].strip().lower()
    if unit not in _UNITS:  # a bare number (bytes, or gigabytes?) too
        raise argparse.ArgumentTypeError(
            f"{text}: give an amount with its unit (MB, MiB, GB, GiB, TB), like 6GB or 500MiB"
        )
    try:
        amount = float(number) * _UNITS[unit]
        if not 10**6 <= amount < 2**60:
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text}: give at least 1MB, like 6GB or 500MiB") from None
    return int(amount)


def add_memory_option(p: argparse.ArgumentParser, per: str) -> None:
    p.add_argument(
        "--memory",
        type=memory_amount,
        metavar="SIZE",
        help=f"the memory a step may use {per} (e.g. 6GB; default: what the device has free "
        "once the models are loaded): cutouts in smaller batches, then checkpointing, fit it",
    )


def add_model_options(p: argparse.ArgumentParser, whose: str) -> None:
    """--models, --vqgan, --clip, --depth and --random-weights: the models a render reads
    instead of `whose` (the storyboard's, the storyboards')."""
    p.add_argument(
        "--models",
        metavar="NAME",
        help="use NAME for both VQGAN and CLIP (e.g. tiny: the depth model too)",
    )
    p.add_argument("--vqgan", metavar="NAME", help=f"override the {whose} VQGAN")
    p.add_argument("--clip", metavar="NAME", help=f"override the {whose} CLIP")
    p.add_argument("--depth", metavar="NAME", help=f"override the {whose} depth model (3D camera)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="the named architectures with random weights (abstract noise; for benchmarks)",
    )


def chosen_models(args: argparse.Namespace) -> dict[str, Any]:
    """The models `add_model_options` asked for, as RenderOptions takes them: `--models`
    names the VQGAN and the CLIP, and with `tiny` (which has one) the depth model too."""
    from pipeline import run

    return {
        "vqgan": args.vqgan or args.models,
        "clip": args.clip or args.models,
        "depth": args.depth or (args.models if args.models == run.TINY else None),
        "random_weights": args.random_weights,
    }


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipeline import batch, run

    if args.device == "cuda" and not args.gpus_per_task:
        print(
            "error: --device cuda needs GPUs for the workers: add --gpus-per-task 1 (Ray gives "
            "a worker a GPU only when it asks for one)",
            file=sys.stderr,
        )
        return 2
    post = None
    if args.post:
        run.check_can_post(args.post, caption="", **cli_tiktok.post_options(args))

        def post(job: batch.Job) -> int:
            caption = job.story.board.caption or "" if job.story else ""
            return cli_tiktok.post(args, str(job.video), args.post, caption)

    options = run.RenderOptions(
        output=Path(args.output) if args.output else None,
        device=args.device,
        memory=args.memory,
        **chosen_models(args),
    )
    bar = tqdm(total=0, unit="frame", desc="batch", dynamic_ncols=True)

    def show(progress: batch.BatchProgress) -> None:
        bar.total = progress.total
        bar.n = progress.done
        each = progress.per_storyboard.items()
        parts = [f"{name} {done}/{total}" for name, (done, total) in each]
        bar.set_postfix_str(", ".join(parts), refresh=False)
        bar.refresh()

    try:
        jobs = batch.batch(
            args.storyboards,
            options,
            cluster=args.cluster,
            gpus_per_task=args.gpus_per_task,
            workers=args.workers,
            post=post,
            on_progress=show,
        )
    except batch.RayMissing as error:
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    bar.close()
    failed = 0
    for job in jobs:
        if job.error is not None:
            failed += 1
            print(f"FAILED  {job.path}: {job.error}", file=sys.stderr)
        elif job.skipped:
            print(f"done    {job.path}: already rendered in an earlier batch")
        else:
            print(f"ok      {job.video}  {job.frames_total} frames in {job.seconds / 60:.1f} min")
    print(f"{len(jobs) - failed} of {len(jobs)} storyboards rendered" + (
        f"; {failed} failed (above)" if failed else ""))  # fmt: skip
    return 1 if failed else 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="render many storyboards, and the shots of each, on a Ray cluster",
        description="Renders every storyboard given (a folder: every *.yaml in it) on Ray, "
        "one task per shot (the frames from the start or a cut to the next cut), and "
        "encodes each video when its shots are done. Frames are the same as "
        "`feverdream render` makes on the same device; a batch run again skips what is done.",
    )
    p.add_argument("storyboards", nargs="+", metavar="STORYBOARD_OR_DIR")
    p.add_argument("-o", "--output", metavar="DIR", help="videos go to DIR/NAME (default outputs/)")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="a Ray cluster's address, or `local` to start Ray here (default: RAY_ADDRESS, "
        "else local)",
    )
    p.add_argument(
        "--gpus-per-task",
        type=float,
        default=0,
        metavar="N",
        help="GPUs each render worker holds (default 0: CPU workers, one per core)",
    )
    p.add_argument("--workers", type=int, metavar="N", help="render workers (default: all fit)")
    add_memory_option(p, per="on each machine, shared by its workers (each GPU's, for GPU workers)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda where a worker has one")
    add_model_options(p, "storyboards'")
    p.add_argument(
        "--post",
        nargs="?",
        const="draft",
        choices=["draft", "direct"],
        help="post each video to TikTok when it is done (default: draft)",
    )
    cli_tiktok.add_post_options(p)
    p.set_defaults(func=cmd_batch)

"""The command line's `models` verbs: list, download, path, verify; pipeline/cli.py adds
them to its parser."""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import FeverdreamError


def _size_text(size: int | None, present: bool) -> str:
    if size is None:
        return "?"
    if size >= 1e9:
        text = f"{size / 1e9:.2f} GB"
    else:
        text = f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    return text if present else f"~{text}"


def cmd_models_list(args: argparse.Namespace) -> int:
    from pipeline import run

    print(f"models folder: {run.models_folder()} (set FEVERDREAM_MODELS to move it)")
    for kind, title in (("vqgan", "VQGAN"), ("clip", "CLIP"), ("depth", "depth (3D camera)")):
        print(f"\n{title:26} {'size':>10}  {'status':8} notes / path")
        for row in run.models_status(kind):
            size = _size_text(row.size, row.present)
            print(f"{row.name:26} {size:>10}  {row.state:8} {row.notes}")
            if row.present:
                for path in row.paths:
                    print(f"{'':46} {path}")
    print(f"\n{run.RANDOM_WEIGHTS_NOTE}")
    return 0


def cmd_models_download(args: argparse.Namespace) -> int:
    from pipeline import run

    failed = 0
    for name in args.names:
        try:
            for path in run.download_model(name):
                print(path)
        except FeverdreamError as error:
            # Go on with the other names; one dead link should not block the rest.
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from pipeline import run

    for path in run.model_paths(args.name):
        print(path)
    return 0


def cmd_models_verify(args: argparse.Namespace) -> int:
    from pipeline import run

    failed = 0
    for target in args.targets:
        try:
            verdicts = run.verify_model(target)
        except FeverdreamError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        for verdict in verdicts:
            print(verdict.path)
            print(f"  sha256     {verdict.sha256}: {verdict.hash_note}")
            print(f"  model      {verdict.architecture or '(does not load)'}")
            if verdict.entry:
                print(f"  registry   {verdict.entry}")
            for problem in verdict.problems:
                print(f"  problem    {problem}")
            print("  verdict    " + ("usable" if verdict.ok else "not usable as it is"))
            failed += not verdict.ok
    return 1 if failed else 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """models list|download|path|verify."""
    models = sub.add_parser(
        "models",
        help="list, download and locate VQGAN, CLIP and depth model checkpoints",
        description="Model files live in the models folder: FEVERDREAM_MODELS, else your "
        "user cache. `tiny` needs no download (random weights: abstract noise, not art); "
        "`shapes`, trained by feverdream on drawn shapes, ships with the package (`make "
        "shapes` in a checkout trains it again from its recipe).",
    )
    # Without an action: this group's help, not an argparse error.
    verbs = models.add_subparsers(dest="models_verb", metavar="ACTION")
    models.set_defaults(func=lambda args: models.print_help() or 2)

    p = verbs.add_parser("list", help="what is known, what is downloaded, sizes and paths")
    p.set_defaults(func=cmd_models_list)

    p = verbs.add_parser("download", help="fetch models into the models folder (resumable)")
    p.add_argument("names", nargs="+", metavar="NAME", help="e.g. vqgan_imagenet_f16_16384")
    p.set_defaults(func=cmd_models_download)

    p = verbs.add_parser("path", help="where a model's files are; fails if not downloaded")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_models_path)

    p = verbs.add_parser(
        "verify",
        help="check model files copied by hand: hash, loads, architecture, which model it is",
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="NAME|PATH",
        help="a registry name or a .ckpt/.yaml/.pt/.pth file",
    )
    p.set_defaults(func=cmd_models_verify)

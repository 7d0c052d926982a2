"""The command line's `tiktok` verbs (login, logout, whoami, post, status) and the post
options `render --post` shares; pipeline/cli.py adds them to its parser."""

from __future__ import annotations

import argparse


def _tiktok_say(line: str) -> None:
    # Flushed at once: `tiktok login` waits on the user right after printing the link.
    print(line, flush=True)


def cmd_tiktok_login(args: argparse.Namespace) -> int:
    from pipeline import run

    run.login(
        port=args.port,
        open_browser=not args.no_browser,
        paste=args.paste,
        ask=input,
        say=_tiktok_say,
    )
    return 0


def cmd_tiktok_whoami(args: argparse.Namespace) -> int:
    from pipeline import run

    run.whoami(say=_tiktok_say)
    return 0


def cmd_tiktok_logout(args: argparse.Namespace) -> int:
    from pipeline import run

    run.logout(say=_tiktok_say)
    return 0


def post_options(args: argparse.Namespace) -> dict:
    """The options `add_post_options` declared, as keywords of `run.post` and
    `run.check_can_post` (which `render --post` calls before rendering)."""
    return {
        "privacy": args.privacy,
        "disable_comment": args.disable_comment,
        "disable_duet": args.disable_duet,
        "disable_stitch": args.disable_stitch,
        "cover_ms": args.cover_ms,
        "yes": args.yes,
    }


def post(args: argparse.Namespace, video: str, mode: str, caption: str) -> int:
    """Post `video` as `mode` ("draft" or "direct"); the `tiktok post` verb and
    `render --post` both end here."""
    from pipeline import run

    run.post(
        video,
        mode,
        caption=caption,
        wait=not args.no_wait,
        say=_tiktok_say,
        **post_options(args),
    )
    return 0


def cmd_tiktok_post(args: argparse.Namespace) -> int:
    return post(args, args.video, args.mode, args.caption)


def cmd_tiktok_status(args: argparse.Namespace) -> int:
    from pipeline import run

    status = run.post_status(args.publish_id, say=_tiktok_say)
    return 1 if status.status == "FAILED" else 0


def add_post_options(p: argparse.ArgumentParser) -> None:
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


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """tiktok login|logout|whoami|post|status."""
    tiktok = sub.add_parser(
        "tiktok",
        help="log in to TikTok and post videos",
        description="Needs your own TikTok app: export TIKTOK_CLIENT_KEY and TIKTOK_CLIENT_SECRET.",
    )
    # Without an action: this group's help, not an argparse error.
    verbs = tiktok.add_subparsers(dest="tiktok_verb", metavar="ACTION")
    tiktok.set_defaults(func=lambda args: tiktok.print_help() or 2)

    p = verbs.add_parser(
        "login",
        help="log in through the browser (PKCE, local callback; --paste on Colab or over SSH)",
        description="Log in to TikTok and save the token. On a machine your browser cannot "
        "reach (Colab, a server over SSH), use --paste: open the printed link on any device, "
        "log in, and paste back the address the browser ends up on (its page will not load).",
    )
    p.add_argument(
        "--port",
        type=int,
        default=3455,
        help="the port of your app's redirect URI http://127.0.0.1:PORT/callback/, where the "
        "local callback listens (default 3455; 0 picks a free one, without --paste)",
    )
    p.add_argument(
        "--no-browser",
        action="store_true",
        help="print the link, do not open it (open it in a browser on this machine)",
    )
    p.add_argument(
        "--paste",
        action="store_true",
        help="for Colab or SSH: do not listen; open the link on any device, then paste here the "
        "address the browser ends up on (or just its code)",
    )
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
    add_post_options(p)
    p.set_defaults(func=cmd_tiktok_post)

    p = verbs.add_parser("status", help="where a post stands")
    p.add_argument("publish_id")
    p.set_defaults(func=cmd_tiktok_status)

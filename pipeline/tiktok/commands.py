"""What a user does with TikTok: log in, see who is logged in, log out, post a video, ask about
a post. The CLI's `tiktok` verbs and `render --post` call these; `say` is how they talk back."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import httpx
from tqdm import tqdm

from pipeline import __version__
from pipeline.errors import FeverdreamError
from pipeline.tiktok import auth
from pipeline.tiktok.auth import NotLoggedIn, OAuth, Session, Token, TokenStore
from pipeline.tiktok.client import CreatorInfo, PublishStatus, PublishTask, TikTokClient
from pipeline.tiktok.config import Credentials, Settings
from pipeline.tiktok.errors import RELOGIN, TikTokError, explain
from pipeline.tiktok.upload import (
    ChunkPlan,
    UploadRejected,
    plan_chunks,
    upload_file,
    wait_for_status,
)

log = logging.getLogger(__name__)

Say = Callable[[str], None]
PRIVACY_LEVELS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")
MAX_CAPTION_UTF16 = 2200
MAX_API_DURATION_S = 600.0
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=15.0)


def _http() -> httpx.Client:
    # httpx logs every request's URL at INFO, and upload URLs carry an upload token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return httpx.Client(timeout=HTTP_TIMEOUT, headers={"User-Agent": f"feverdream/{__version__}"})


# --- account -------------------------------------------------------------------------------


def login(
    *,
    port: int = auth.DEFAULT_PORT,
    open_browser: bool = True,
    paste: bool = False,
    ask: Callable[[str], str] = input,
    say: Say = log.info,
) -> str:
    """Log in through the browser, save the token, and return the user's display name.

    paste: for machines no browser can reach (Colab, SSH): nothing listens; the user opens the
    printed link on any device and pastes back, through `ask`, the address TikTok sent the
    browser to (`open_browser` is then ignored)."""
    settings = Settings.from_env()
    credentials = Credentials.from_env()
    with _http() as http:
        if paste:
            result = auth.login_by_paste(http, settings, credentials, port=port, say=say, ask=ask)
        else:
            result = auth.login(
                http, settings, credentials, port=port, open_browser=open_browser, say=say
            )
        name = _display_name(TikTokClient(Session(http, settings, result.token)))
    say(f"Logged in to TikTok as {name}.")
    if result.missing_scopes:
        say(
            f"warning: you did not allow {', '.join(sorted(result.missing_scopes))}; "
            + _missing_scope_effects(result.missing_scopes)
            + "; run `feverdream tiktok login` again to allow it"
        )
    return name


def logged_in() -> bool:
    """Whether a TikTok login is saved on this machine (asks TikTok nothing)."""
    return TokenStore(Settings.from_env().token_path).load() is not None


def _missing_scope_effects(missing: frozenset[str]) -> str:
    effects = {
        "video.upload": "drafts (--draft) will not work",
        "video.publish": "direct posts (--direct) will not work",
        "user.info.basic": "feverdream cannot show who is logged in",
    }
    return ", ".join(effects[scope] for scope in sorted(missing) if scope in effects)


def _display_name(client: TikTokClient) -> str:
    token = client.session.token
    if "user.info.basic" not in token.scopes:
        return f"open_id {token.open_id}"
    user = client.user_info()
    return f"{user.get('display_name') or '(no display name)'} (open_id {token.open_id})"


def whoami(*, say: Say = log.info) -> str:
    """Say who is logged in and what the login allows."""
    settings = Settings.from_env()
    with _http() as http:
        client = TikTokClient(Session.load(http, settings))
        name = _display_name(client)
    say(f"Logged in to TikTok as {name}.")
    say(f"permissions: {', '.join(sorted(client.session.token.scopes))}")
    return name


@dataclass(frozen=True)
class Account:
    """Who is logged in, as a front end shows it: no token, only what the user may see.
    `privacy_options` are the account's own (asked of TikTok; empty without video.publish,
    when direct posts are not allowed)."""

    logged_in: bool
    name: str = ""
    scopes: tuple[str, ...] = ()
    privacy_options: tuple[str, ...] = ()


def account() -> Account:
    """The TikTok login on this machine, and the privacy levels a direct post may use."""
    settings = Settings.from_env()
    if TokenStore(settings.token_path).load() is None:
        return Account(logged_in=False)
    with _http() as http:
        client = TikTokClient(Session.load(http, settings))
        name = _display_name(client)
        scopes = tuple(sorted(client.session.token.scopes))
        options = client.creator_info().privacy_options if "video.publish" in scopes else ()
    return Account(True, name, scopes, tuple(options))


def logout(*, say: Say = log.info) -> None:
    """Revoke the token at TikTok and delete it here; the local token goes even if TikTok
    cannot be told, so a lost network never keeps a login on disk."""
    settings = Settings.from_env()
    store = TokenStore(settings.token_path)
    if store.load() is None:
        say("Not logged in to TikTok.")
        return
    try:
        with _http() as http:
            session = Session.load(http, settings)
            session.access_token()
            OAuth(http, settings, Credentials.from_env()).revoke(session.token)
    except FeverdreamError as error:
        say(
            f"warning: TikTok did not confirm the revocation ({error}); to cut feverdream off "
            "for sure, remove the app in TikTok > Settings > Security > Apps and services"
        )
    store.delete()
    say("Logged out of TikTok; the token is deleted.")


# --- posting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostResult:
    """How a post ended: its publish_id, the last status seen ("" with wait=False), and the
    public link once TikTok has one."""

    publish_id: str
    status: str
    url: str | None = None


def post_video(
    path: Path | str,
    *,
    mode: Literal["draft", "direct"] = "draft",
    caption: str = "",
    privacy: str | None = None,
    disable_comment: bool | None = None,
    disable_duet: bool | None = None,
    disable_stitch: bool | None = None,
    cover_ms: int | None = None,
    yes: bool = False,
    wait: bool = True,
    say: Say = log.info,
    confirm: Callable[[str], bool] | None = None,
) -> PostResult:
    """Post a video to the logged-in TikTok account.

    draft: upload to the user's inbox (scope video.upload; works for unaudited apps); the user
    adds caption and privacy in the TikTok app. direct: publish now (video.publish) with
    `privacy` (required, one of the account's options), the caption, interaction switches and
    the AI-generated label; asks `confirm` (default: a y/N question on the terminal) unless
    `yes`. The file is checked as `feverdream check` does before anything goes out. Raises
    TikTokError (a FeverdreamError) when TikTok refuses or the post fails.

    Comments, duets and stitches start off, as TikTok's rules for apps require: None (not
    stated) and True keep one off, False opts in and is refused when the account has that
    interaction disabled. A draft takes none of them: the user sets them in the app."""
    path = Path(path)
    privacy = _check_options(
        mode, caption, privacy, (disable_comment, disable_duet, disable_stitch), cover_ms
    )
    if not path.is_file():
        raise FeverdreamError(f"{path}: no such video file")
    settings = Settings.from_env()
    with _http() as http:
        session = Session.load(http, settings)
        _require_scope(session.token, mode)
        _preflight(path, MAX_API_DURATION_S)
        client = TikTokClient(session)
        plan = plan_chunks(path.stat().st_size)
        if mode == "direct":
            creator = client.creator_info()
            say(f"Posting to TikTok as {creator.nickname} (@{creator.username}).")
            post_info = _direct_post_info(
                path,
                creator,
                caption,
                privacy,
                (disable_comment, disable_duet, disable_stitch),
                cover_ms,
            )
            _summarise(say, path, creator, caption, post_info)
            if not yes and not (confirm or _confirm_on_terminal)("Post it now? [y/N] "):
                raise FeverdreamError("not posted: you did not confirm")
            init = partial(client.init_direct, post_info, plan.source_info())
        else:
            creator = None
            init = partial(client.init_inbox, plan.source_info())
        publish_id = _upload(http, init, path, plan, say)
        if not wait:
            say(f"Uploaded. TikTok is processing it: `feverdream tiktok status {publish_id}`.")
            return PostResult(publish_id, "")
        say("TikTok is processing the video; this can take a few minutes.")
        status = wait_for_status(
            client, publish_id, mode, on_change=lambda s: say(f"status: {s.status}")
        )
    return _finish(publish_id, status, mode, creator, caption, say)


def check_can_post(
    mode: Literal["draft", "direct"] = "draft",
    *,
    caption: str = "",
    privacy: str | None = None,
    disable_comment: bool | None = None,
    disable_duet: bool | None = None,
    disable_stitch: bool | None = None,
    cover_ms: int | None = None,
    yes: bool = False,
) -> None:
    """Refuse now what would stop `post_video` before its upload, without the network or the
    video: `render --post` calls it first, so a missing login, app credentials, --privacy or
    --yes costs seconds instead of a whole render."""
    privacy = _check_options(
        mode, caption, privacy, (disable_comment, disable_duet, disable_stitch), cover_ms
    )
    if mode == "direct":
        if privacy is None:
            raise FeverdreamError(
                "a direct post needs --privacy, and TikTok's rules forbid picking one for you: "
                f"choose one of {', '.join(PRIVACY_LEVELS)} that your account offers"
            )
        if not yes:
            _require_terminal()
    _require_scope(TokenStore(Settings.from_env().token_path).load_required(), mode)
    Credentials.from_env()  # a render outlives the 2-hour token; refreshing needs the app


def _check_options(
    mode: str,
    caption: str,
    privacy: str | None,
    disabled: tuple[bool | None, bool | None, bool | None],
    cover_ms: int | None,
) -> str | None:
    """The options' own rules; returns the privacy level spelled as TikTok wants it. A
    missing privacy passes here: the account's options, asked for later, are the better
    answer."""
    if mode not in ("draft", "direct"):
        raise FeverdreamError(f"unknown post mode {mode!r}: use draft or direct")
    if mode == "draft":
        if privacy or any(d is not None for d in disabled) or cover_ms is not None:
            raise FeverdreamError(
                "--privacy, --allow-comment, --allow-duet, --allow-stitch (and their --no-*) "
                "and --cover-ms apply to --direct only: for a draft you choose them in the "
                "TikTok app"
            )
        return None
    units = len(caption.encode("utf-16-le")) // 2
    if units > MAX_CAPTION_UTF16:
        raise FeverdreamError(
            f"the caption is {units} characters (UTF-16 units) long; TikTok allows "
            f"{MAX_CAPTION_UTF16}: shorten it"
        )
    if privacy is None:
        return None
    if privacy.upper() not in PRIVACY_LEVELS:
        raise FeverdreamError(
            f"--privacy {privacy}: not a TikTok privacy level; "
            f"use one of {', '.join(PRIVACY_LEVELS)}"
        )
    return privacy.upper()


def _require_scope(token: Token, mode: str) -> None:
    scope, purpose = (
        ("video.publish", "a direct post")
        if mode == "direct"
        else ("video.upload", "a draft upload")
    )
    if scope not in token.scopes:
        raise NotLoggedIn(
            f"{purpose} needs the {scope} permission, which your TikTok login lacks: "
            f"{RELOGIN} and leave every permission switched on"
        )


def _preflight(path: Path, max_duration_s: float) -> None:
    """Refuse a file TikTok would reject, the same check as `feverdream check`."""
    from pipeline.check import check_video

    problems = check_video(path, max_duration_s=max_duration_s)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise FeverdreamError(f"TikTok would reject {path}; nothing was sent:\n{listed}")


@dataclass(frozen=True)
class Interaction:
    """A way other people can join in on a post, which a direct post may allow (--allow-FLAG)."""

    name: str
    flag: str
    why_disabled: str

    def disabled_for(self, creator: CreatorInfo) -> bool:
        return bool(getattr(creator, f"{self.flag}_disabled"))


# post_info's switch for each interaction, in the order of post_video's disable_* keywords.
INTERACTIONS = {
    "disable_comment": Interaction("comments", "comment", "its Comments setting is No one"),
    "disable_duet": Interaction("duets", "duet", "it is private or its Duet setting is No one"),
    "disable_stitch": Interaction(
        "stitches", "stitch", "it is private or its Stitch setting is No one"
    ),
}


def _direct_post_info(
    path: Path,
    creator: CreatorInfo,
    caption: str,
    privacy: str | None,
    disabled: tuple[bool | None, bool | None, bool | None],
    cover_ms: int | None,
) -> dict:
    """post_info for a direct post, following TikTok's rules for apps: no default privacy, the
    account's own limits on length and interactions, and the AI-generated label."""
    options = ", ".join(creator.privacy_options) or "none"
    if privacy is None:
        raise FeverdreamError(
            f"a direct post needs --privacy, and TikTok's rules forbid picking one for you; "
            f"{creator.nickname} can post with: {options}"
        )
    if privacy not in creator.privacy_options:
        raise FeverdreamError(
            f"{creator.nickname} cannot post with privacy {privacy}; choose one of: {options}"
        )
    if creator.max_duration_s < MAX_API_DURATION_S:
        _preflight(path, creator.max_duration_s)
    post_info = {
        "privacy_level": privacy,
        **{
            key: _interaction_off(interaction, asked, creator)
            for (key, interaction), asked in zip(INTERACTIONS.items(), disabled, strict=True)
        },
        "brand_content_toggle": False,
        "brand_organic_toggle": False,
        "is_aigc": True,
    }
    if caption:
        post_info["title"] = caption
    if cover_ms is not None:
        post_info["video_cover_timestamp_ms"] = cover_ms
    return post_info


def _interaction_off(interaction: Interaction, asked: bool | None, creator: CreatorInfo) -> bool:
    """Whether a direct post turns `interaction` off: yes unless the user opted in, and an
    opt-in the account cannot honour is refused rather than quietly dropped."""
    if asked is not False:
        return True
    if interaction.disabled_for(creator):
        raise FeverdreamError(
            f"--allow-{interaction.flag}: {creator.nickname}'s account cannot allow "
            f"{interaction.name}: {interaction.why_disabled}; drop --allow-{interaction.flag}"
        )
    return False


def _summarise(say: Say, path: Path, creator: CreatorInfo, caption: str, post_info: dict) -> None:
    say(f"  video:    {path} ({path.stat().st_size / 1e6:.1f} MB)")
    say(f"  caption:  {caption or '(none)'}")
    say(f"  privacy:  {post_info['privacy_level']}")
    for key, interaction in INTERACTIONS.items():
        if not post_info[key]:
            state = "on"
        elif interaction.disabled_for(creator):
            state = f"off, and the account cannot allow them: {interaction.why_disabled}"
        else:
            state = f"off (--allow-{interaction.flag} turns them on)"
        say(f"  {interaction.name + ':':9} {state}")
    say("  label:    Creator labeled as AI-generated")
    if post_info["privacy_level"] != "SELF_ONLY":
        say(
            "  note: until your app passes TikTok's audit, only SELF_ONLY posts "
            "to a private account work"
        )
    say("By posting, you agree to TikTok's Music Usage Confirmation.")


def _require_terminal() -> None:
    if not sys.stdin.isatty():
        raise FeverdreamError(
            "a direct post asks for confirmation and there is no terminal to ask on: "
            "check what it will post and pass --yes"
        )


def _confirm_on_terminal(question: str) -> bool:
    _require_terminal()
    return input(question).strip().lower() in ("y", "yes")


def _upload(
    http: httpx.Client,
    init: Callable[[], PublishTask],
    path: Path,
    plan: ChunkPlan,
    say: Say,
) -> str:
    """Init and upload; when TikTok drops the upload URL (403 expired, 404, 416) start once more
    with a new init, since an upload cannot be resumed."""
    try:
        return _init_and_upload(http, init, path, plan, say)
    except UploadRejected as error:
        say(f"TikTok dropped the upload ({error.code}); starting over.")
        return _init_and_upload(http, init, path, plan, say)


def _init_and_upload(
    http: httpx.Client,
    init: Callable[[], PublishTask],
    path: Path,
    plan: ChunkPlan,
    say: Say,
) -> str:
    task = init()
    say(f"publish_id: {task.publish_id}")
    with tqdm(
        total=plan.video_size, unit="B", unit_scale=True, desc="upload", disable=None, leave=False
    ) as bar:
        upload_file(http, task.upload_url, path, plan, on_progress=bar.update)
    return task.publish_id


def _finish(
    publish_id: str,
    status: PublishStatus,
    mode: str,
    creator: CreatorInfo | None,
    caption: str,
    say: Say,
) -> PostResult:
    if status.status == "FAILED":
        reason = status.fail_reason or "FAILED"
        raise TikTokError(reason, f"status FAILED for {publish_id}")
    url = None
    if status.post_ids and creator is not None:
        url = f"https://www.tiktok.com/@{creator.username}/video/{status.post_ids[0]}"
    if mode == "draft" and status.status == "SEND_TO_USER_INBOX":
        say(
            "Sent to your TikTok inbox: open the notification in the TikTok app to finish the post."
        )
        if caption:
            say(f"TikTok drafts carry no caption; paste it there: {caption}")
    else:
        say("Posted to TikTok." + (f" {url}" if url else ""))
    return PostResult(publish_id, status.status, url)


def post_status(publish_id: str, *, say: Say = log.info) -> PublishStatus:
    """Ask TikTok where a post stands and say it, with what to do if it failed."""
    settings = Settings.from_env()
    with _http() as http:
        status = TikTokClient(Session.load(http, settings)).fetch_status(publish_id)
    say(f"{publish_id}: {status.status}")
    if status.fail_reason:
        say(f"fail_reason: {status.fail_reason}: {explain(status.fail_reason)}")
    for post_id in status.post_ids:
        say(f"post id: {post_id}")
    return status

"""TikTok's error codes and fail reasons, each turned into what the user can do about it."""

from __future__ import annotations

from pipeline.errors import FeverdreamError

RELOGIN = "run `feverdream tiktok login` again"
WAIT_A_DAY = "try again in 24 hours"

# Every code TikTok documents for posting: the v2 envelope codes, the OAuth `error` values, the
# status fail_reasons and the upload PUT's bare HTTP statuses (as upload_http_<status>).
HINTS: dict[str, str] = {
    # v2 API envelope
    "access_token_invalid": f"your TikTok login has expired or was revoked: {RELOGIN}",
    "scope_not_authorized": (
        "your TikTok login does not allow this (video.upload is needed for drafts, "
        f"video.publish for --direct): {RELOGIN} and leave every permission switched on"
    ),
    "scope_permission_missed": f"this request needs a permission your login lacks: {RELOGIN}",
    "invalid_params": (
        "TikTok rejected the request's fields; this is a feverdream bug, please report it "
        "with the message and log_id below"
    ),
    "invalid_file_upload": (
        "TikTok does not accept this file: run `feverdream check VIDEO` and fix what it lists"
    ),
    "rate_limit_exceeded": (
        "TikTok's rate limit was hit (6 uploads, 20 creator queries or 30 status checks a "
        "minute): wait a minute and try again"
    ),
    "internal_error": "TikTok had an internal error: try again in a few minutes",
    "spam_risk_too_many_posts": (
        f"this account reached TikTok's daily limit of posts made through apps: {WAIT_A_DAY}"
    ),
    "spam_risk_user_banned_from_posting": (
        "TikTok has banned this account from posting; check the account in the TikTok app"
    ),
    "reached_active_user_cap": (
        "your TikTok app reached its daily cap of posting users (5 a day while unaudited): "
        f"{WAIT_A_DAY}, or have the app audited"
    ),
    "unaudited_client_can_only_post_to_private_accounts": (
        "your TikTok app is not audited yet, so it can only post to a private account: make "
        "the account private (TikTok app > Settings > Privacy) and use --privacy SELF_ONLY, "
        "have the app audited, or post with --draft and publish from the TikTok app"
    ),
    "url_ownership_unverified": (
        "TikTok only pulls videos from verified domains; feverdream uploads the file itself, "
        "so this is a feverdream bug, please report it"
    ),
    "privacy_level_option_mismatch": (
        "that privacy level is not one this account offers: pick one of the levels "
        "feverdream lists for it with --privacy"
    ),
    "spam_risk_too_many_pending_share": (
        "TikTok allows at most 5 drafts waiting in the inbox per day: open the TikTok app, "
        f"post or delete the pending drafts, or {WAIT_A_DAY}"
    ),
    "invalid_publish_id": "TikTok knows no post with this publish_id: check the id you passed",
    "token_not_authorized_for_specified_publish_id": (
        "this publish_id belongs to another TikTok account: log in as that account"
    ),
    "publish_not_cancellable": "this post is too far along to cancel",
    "app_version_check_failed": "update the TikTok app on your phone, then try again",
    # OAuth `error` values
    "access_denied": f"the login was denied on TikTok's page: {RELOGIN} and allow access",
    "invalid_client": (
        "TikTok does not recognise the app: check TIKTOK_CLIENT_KEY and TIKTOK_CLIENT_SECRET"
    ),
    "invalid_grant": f"your TikTok login has expired or was revoked: {RELOGIN}",
    "invalid_request": (
        "TikTok rejected the login request; check that the app's redirect URI is "
        "http://127.0.0.1:<port>/callback/ for the --port you use (or http://127.0.0.1:*/callback/)"
    ),
    "invalid_scope": (
        "the app is not approved for user.info.basic, video.upload and video.publish: add "
        "Login Kit and Content Posting API to it on developers.tiktok.com"
    ),
    "unauthorized_client": (
        "the app may not use this login flow: register it as a Desktop app on developers.tiktok.com"
    ),
    "unsupported_grant_type": "TikTok refused the grant type; this is a feverdream bug",
    "unsupported_response_type": "TikTok refused the response type; this is a feverdream bug",
    "server_error": "TikTok's login service failed: try again in a few minutes",
    "temporarily_unavailable": "TikTok's login service is busy: try again in a few minutes",
    # status fail_reason values
    "file_format_check_failed": (
        "TikTok could not read the file: re-render it as an H.264/AAC MP4 "
        "(`feverdream check VIDEO` says what to change)"
    ),
    "duration_check_failed": (
        "the video is too long or too short for this account: trim it and post again"
    ),
    "frame_rate_check_failed": (
        "TikTok needs a constant frame rate between 23 and 60 fps: re-render with such an fps"
    ),
    "picture_size_check_failed": (
        "each side of the video must be 360 to 4096 pixels: re-render at 1080x1920"
    ),
    "internal": "TikTok failed while processing the video: post it again",
    "video_pull_failed": "TikTok could not download the video: post it again",
    "photo_pull_failed": "TikTok could not download the photo: post it again",
    "publish_cancelled": "the post was cancelled",
    "auth_removed": f"access to the account was removed while posting: {RELOGIN}",
    "spam_risk_text": "TikTok judged the caption spammy: change the caption and post again",
    "spam_risk": "TikTok judged the post risky and refused it",
    # the upload PUT, which answers with bare HTTP statuses
    "upload_http_400": "TikTok rejected an upload chunk as malformed; this is a feverdream bug",
    "upload_http_403": "the upload link expired (links last an hour): post again",
    "upload_http_404": "TikTok no longer knows this upload: post again",
    "upload_http_416": "TikTok lost track of the upload's progress: post again",
    "upload_http_5xx": "TikTok's upload servers kept failing: post again later",
    # an answer feverdream cannot read
    "bad_response": "TikTok answered with something feverdream cannot read: try again later",
}

# TikTok's reference tables spell it one way, its servers the other.
ALIASES = {"invalid_param": "invalid_params"}


def explain(code: str) -> str:
    """What the user can do about TikTok's `code`; a generic line for codes nobody listed."""
    code = ALIASES.get(code, code)
    if code.startswith("upload_http_5"):
        code = "upload_http_5xx"
    if code in HINTS:
        return HINTS[code]
    if code.startswith("http_5"):
        return HINTS["internal_error"]
    return "TikTok refused the request: see its message below"


class TikTokError(FeverdreamError):
    """A request TikTok refused, carrying its own code, message and log_id (for support)."""

    def __init__(
        self,
        code: str,
        message: str = "",
        log_id: str = "",
        *,
        status: int | None = None,
        hint: str | None = None,
    ):
        self.code = code
        self.message = message
        self.log_id = log_id
        self.status = status
        self.hint = hint or explain(code)
        said = f"{code}: {message}" if message else code
        if log_id:
            said += f" (log_id {log_id})"
        super().__init__(f"{self.hint}\n  TikTok said: {said}")


def unreachable(where: str, error: Exception) -> FeverdreamError:
    """A request that never got an answer: a network failure, not a refusal."""
    return FeverdreamError(
        f"could not reach {where} ({type(error).__name__}: {error}): check the connection "
        "and try again"
    )

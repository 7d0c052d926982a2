"""Posting to TikTok through its official Content Posting API and Login Kit.

`post_video` is the one way a video goes out: the `tiktok post` verb and `render --post` both
call it (`render --post` calls `check_can_post` before rendering, to fail early). auth.py logs
in and keeps tokens, client.py speaks the API, upload.py moves the bytes.
"""

from pipeline.tiktok.commands import (
    Account,
    PostResult,
    account,
    check_can_post,
    logged_in,
    login,
    logout,
    post_status,
    post_video,
    whoami,
)
from pipeline.tiktok.errors import TikTokError

__all__ = [
    "Account",
    "account",
    "PostResult",
    "TikTokError",
    "check_can_post",
    "logged_in",
    "login",
    "logout",
    "post_status",
    "post_video",
    "whoami",
]

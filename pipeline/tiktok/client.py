"""The TikTok v2 API for one logged-in user: creator info, post init, status, user info; every
answer's `error.code` is read, whatever the HTTP status, and refused calls raise TikTokError."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import stamina

from pipeline.tiktok.auth import Session
from pipeline.tiktok.errors import TikTokError, unreachable

log = logging.getLogger(__name__)
# stamina logs every retry it schedules at WARNING. A status poll is not a failure, and a
# resend or a retried init says so in its own words here: its lines would only repeat them.
logging.getLogger("stamina").setLevel(logging.ERROR)

USER_FIELDS = "open_id,union_id,avatar_url,display_name"
# Retrying an init that failed inside TikTok leaves an orphan publish_id behind and counts
# against the 6 inits a minute, so only a couple of tries.
INIT_ATTEMPTS = 3
RETRY_BACKOFF_S = 2.0


@dataclass(frozen=True)
class CreatorInfo:
    """Who a direct post goes to and what TikTok lets them do right now."""

    nickname: str
    username: str
    privacy_options: tuple[str, ...]
    comment_disabled: bool
    duet_disabled: bool
    stitch_disabled: bool
    max_duration_s: float

    @classmethod
    def from_data(cls, data: dict) -> CreatorInfo:
        return cls(
            nickname=str(data.get("creator_nickname", "")),
            username=str(data.get("creator_username", "")),
            privacy_options=tuple(data.get("privacy_level_options") or ()),
            comment_disabled=bool(data.get("comment_disabled")),
            duet_disabled=bool(data.get("duet_disabled")),
            stitch_disabled=bool(data.get("stitch_disabled")),
            max_duration_s=float(data.get("max_video_post_duration_sec") or 600),
        )


@dataclass(frozen=True)
class PublishTask:
    """What a post init hands back: the id to ask about, and where the bytes go."""

    publish_id: str
    upload_url: str = ""


@dataclass(frozen=True)
class PublishStatus:
    status: str
    fail_reason: str = ""
    post_ids: tuple[int, ...] = ()
    uploaded_bytes: int | None = None

    @classmethod
    def from_data(cls, data: dict) -> PublishStatus:
        ids = data.get("publicaly_available_post_id") or ()  # TikTok's spelling
        uploaded = data.get("uploaded_bytes")
        return cls(
            status=str(data.get("status", "")),
            fail_reason=str(data.get("fail_reason") or ""),
            post_ids=tuple(int(i) for i in ids),
            uploaded_bytes=int(uploaded) if uploaded is not None else None,
        )


def api_data(response: httpx.Response) -> dict:
    """The `data` of a v2 answer, or TikTokError with TikTok's code, message and log_id.

    TikTok sends some refusals with HTTP 200 and error bodies with or without `data`, so
    success is `error.code == "ok"` and a 2xx status, nothing less."""
    try:
        body = response.json()
    except ValueError:
        raise TikTokError(
            "bad_response", f"HTTP {response.status_code}", status=response.status_code
        ) from None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        if response.is_success:
            raise TikTokError(
                "bad_response", "the answer has no error object", status=response.status_code
            )
        raise TikTokError(f"http_{response.status_code}", status=response.status_code)
    code = str(error.get("code") or f"http_{response.status_code}")
    message, log_id = str(error.get("message", "")), str(error.get("log_id", ""))
    log.debug("HTTP %s %s %s log_id=%s", response.status_code, code, message, log_id)
    if code != "ok":
        raise TikTokError(code, message, log_id, status=response.status_code)
    if not response.is_success:
        raise TikTokError(
            f"http_{response.status_code}", message, log_id, status=response.status_code
        )
    data = body.get("data")
    return data if isinstance(data, dict) else {}


@dataclass
class TikTokClient:
    """Calls the v2 API as the session's user, refreshing an expired token once per call."""

    session: Session

    @property
    def http(self) -> httpx.Client:
        return self.session.http

    def user_info(self) -> dict:
        data = self._call("GET", "/v2/user/info/", params={"fields": USER_FIELDS})
        user = data.get("user")
        return user if isinstance(user, dict) else {}

    def creator_info(self) -> CreatorInfo:
        return CreatorInfo.from_data(self._call("POST", "/v2/post/publish/creator_info/query/", {}))

    def init_direct(self, post_info: dict, source_info: dict) -> PublishTask:
        return self._init(
            "/v2/post/publish/video/init/", {"post_info": post_info, "source_info": source_info}
        )

    def init_inbox(self, source_info: dict) -> PublishTask:
        # Only source_info: the inbox endpoint takes no post_info, the user sets it in the app.
        return self._init("/v2/post/publish/inbox/video/init/", {"source_info": source_info})

    def fetch_status(self, publish_id: str) -> PublishStatus:
        data = self._call("POST", "/v2/post/publish/status/fetch/", {"publish_id": publish_id})
        return PublishStatus.from_data(data)

    def _init(self, path: str, payload: dict) -> PublishTask:
        for attempt in retries(_init_failed_inside_tiktok, INIT_ATTEMPTS, RETRY_BACKOFF_S):
            with attempt:
                if attempt.num > 1:
                    log.warning("TikTok failed to start the upload; trying again (%d)", attempt.num)
                data = self._call("POST", path, payload)
        publish_id = data.get("publish_id")
        if not publish_id:
            raise TikTokError("bad_response", "the init answer holds no publish_id")
        return PublishTask(str(publish_id), str(data.get("upload_url") or ""))

    def _call(
        self, method: str, path: str, payload: dict | None = None, params: dict | None = None
    ) -> dict:
        refreshed = False
        while True:
            headers = {"Authorization": f"Bearer {self.session.access_token()}"}
            content = None
            if payload is not None:
                headers["Content-Type"] = "application/json; charset=UTF-8"
                content = json.dumps(payload).encode("utf-8")
            log.debug("%s %s", method, path)
            try:
                response = self.http.request(
                    method,
                    f"{self.session.settings.api_base}{path}",
                    content=content,
                    params=params,
                    headers=headers,
                )
            except httpx.TransportError as error:
                raise unreachable(self.session.settings.api_base, error) from None
            try:
                return api_data(response)
            except TikTokError as error:
                if error.code != "access_token_invalid" or refreshed:
                    raise
                refreshed = True
                self.session.refresh()


def _init_failed_inside_tiktok(error: Exception) -> bool:
    """Whether an init is worth another try: TikTok's own fault, not the request's."""
    return isinstance(error, TikTokError) and (
        error.code == "internal_error" or (error.status or 0) >= 500
    )


def retries(on: Any, attempts: int, first_wait_s: float) -> Any:
    """How a call to TikTok is tried again (stamina's retry_context, whose test mode drops the
    waits): `attempts` tries while `on` (exception types, or a predicate) says so, the first
    wait `first_wait_s` and each next one twice the last, with no jitter and no deadline but
    the attempts."""
    return stamina.retry_context(
        on=on,
        attempts=attempts,
        timeout=None,
        wait_initial=first_wait_s,
        wait_max=first_wait_s * 2**attempts,
        wait_jitter=0,
    )

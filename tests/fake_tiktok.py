"""A fake TikTok for tests: Login Kit and the Content Posting API on 127.0.0.1, as strict as
TikTok's documented and observed rules (TIKTOK_API.md section 10), with knobs for failures."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SCOPES = {"user.info.basic", "video.upload", "video.publish", "video.list"}
PRIVACY_LEVELS = {"PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"}
UPLOAD_TYPES = {"video/mp4", "video/quicktime", "video/webm"}
BOOL_FIELDS = (
    "disable_duet",
    "disable_stitch",
    "disable_comment",
    "brand_content_toggle",
    "brand_organic_toggle",
    "is_aigc",
)
OAUTH_ERROR_TEXT = {
    "invalid_request": "The request parameters are malformed.",
    "invalid_client": "Client key or secret is invalid.",
    "invalid_grant": "Authorization code or refresh token is expired or invalid.",
    "unsupported_grant_type": "The grant type is not supported.",
}


@dataclass
class Knobs:
    """How this TikTok behaves; the defaults are the strict reading of the documents."""

    audited: bool = False
    account_private: bool = True
    max_video_post_duration_sec: int = 600
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    granted_scopes: tuple[str, ...] | None = None  # None: whatever was asked for
    deny: bool = False
    accept_base64url_challenge: bool = False
    code_ttl: float = 300.0
    access_ttl: int = 7200
    refresh_ttl: int = 15_552_000
    rotate_refresh: bool = True
    oauth_error_status: int = 200  # proves the client does not trust status codes
    unaudited_non_self_only: str = "force"  # or "reject"
    creator_info_error: str | None = None  # a spam/cap code, answered with HTTP 200
    rate_limits: dict[str, int] = field(
        default_factory=lambda: {"creator_info": 20, "init": 6, "inbox_init": 6, "status": 30}
    )
    rate_window_s: float = 60.0
    rate_limit_status: int = 429
    bare_errors: bool = False  # error bodies as {"error": ...} without "data"
    processing_polls: int = 2
    moderation_polls: int = 1
    fail_reason: str | None = None
    user_posts_draft: bool = False
    # chunk index -> HTTP statuses answered instead of accepting it, one per attempt
    chunk_errors: dict[int, list[int]] = field(default_factory=dict)
    idempotent_resend: bool = True
    upload_ttl: float = 3600.0
    min_chunk: int = 5 * 1024 * 1024
    max_chunk: int = 64_000_000
    max_last: int = 128_000_000
    direct_post_cap: int = 15
    inbox_pending_cap: int = 5
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1:*/callback/",)


@dataclass
class User:
    open_id: str
    display_name: str
    username: str


@dataclass
class Grant:
    """An access token and what it may do."""

    open_id: str
    scopes: frozenset[str]
    expires_at: float
    refresh_token: str
    revoked: bool = False


@dataclass
class Refresh:
    open_id: str
    scopes: frozenset[str]
    expires_at: float
    valid: bool = True


@dataclass
class Code:
    client_key: str
    redirect_uri: str
    scopes: frozenset[str]
    challenge: str
    issued_at: float
    used: bool = False


@dataclass
class Task:
    """One init: where its bytes go and how far they got."""

    publish_id: str
    kind: str  # "direct" or "inbox"
    open_id: str
    video_size: int
    chunk_size: int
    count: int
    upload_id: str
    upload_token: str
    issued_at: float
    post_info: dict | None
    received: int = 0
    chunks: int = 0
    ranges: list[str] = field(default_factory=list)
    sha256: Any = field(default_factory=hashlib.sha256)
    last_range: tuple[int, int] | None = None
    last_status: int = 0
    polls_after_upload: int = 0

    @property
    def complete(self) -> bool:
        return self.received == self.video_size


@dataclass
class Recorded:
    """A request as the fake saw it (upload bodies are counted, not kept)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str] | None = None
    json: Any = None
    body_size: int = 0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str = ""):
        self.status, self.code, self.message = status, code, message


class OAuthError(Exception):
    def __init__(self, code: str, description: str = ""):
        self.code, self.description = code, description or OAUTH_ERROR_TEXT.get(code, code)


def log_id() -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return stamp + secrets.token_hex(10).upper()


def nineteen_digits() -> str:
    return str(secrets.randbelow(9 * 10**18) + 10**18)


class FakeTikTok:
    """Start with `with FakeTikTok() as fake:`; `fake.base_url` serves every route."""

    def __init__(self, knobs: Knobs | None = None):
        self.knobs = knobs or Knobs()
        self.client_key = "awfake" + secrets.token_hex(6)
        self.client_secret = "secret-" + secrets.token_hex(16)
        self.user = User(str(uuid.uuid4()), "Fever Tester", "fevertester")
        self.requests: list[Recorded] = []
        self.codes: dict[str, Code] = {}
        self.grants: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Refresh] = {}
        self.tasks: dict[str, Task] = {}
        self.verifiers: list[str] = []
        self.direct_posts = 0
        self.pending_shares = 0
        self.clock_offset = 0.0
        # called with the Grant of every authorised API request, before it is answered
        self.on_api_call: Any = None
        self.lock = threading.RLock()
        self._hits: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # --- life -------------------------------------------------------------------------------

    def __enter__(self) -> FakeTikTok:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def now(self) -> float:
        return time.time() + self.clock_offset

    # --- helpers for tests ------------------------------------------------------------------

    def issue_tokens(self, scopes: set[str] | None = None) -> dict:
        """A token answer as /v2/oauth/token/ gives it, for tests that skip the browser."""
        with self.lock:
            return self._issue(
                frozenset(scopes or {"user.info.basic", "video.upload", "video.publish"})
            )

    def expire_access_tokens(self) -> None:
        with self.lock:
            for grant in self.grants.values():
                grant.expires_at = self.now() - 1

    def environ(self) -> dict[str, str]:
        """The environment that points feverdream at this fake."""
        return {
            "TIKTOK_CLIENT_KEY": self.client_key,
            "TIKTOK_CLIENT_SECRET": self.client_secret,
            "FEVERDREAM_TIKTOK_API": self.base_url,
            "FEVERDREAM_TIKTOK_AUTHORIZE": f"{self.base_url}/v2/auth/authorize/",
        }

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def secrets(self) -> list[str]:
        """Every value that must never appear in the client's output."""
        with self.lock:
            return [self.client_secret, *self.grants, *self.refresh_tokens, *self.verifiers]

    # --- OAuth ------------------------------------------------------------------------------

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """The consent page, which consents at once: a 302 to the redirect_uri, or a 400 page
        naming the bad parameter as TikTok's does."""
        k = self.knobs

        def page(param: str) -> tuple[int, dict[str, str], str]:
            return 400, {}, f"We couldn't log in with TikTok. Correct the following: {param}"

        if query.get("client_key") != self.client_key:
            return page("client_key")
        if query.get("response_type") != "code":
            return page("response_type")
        scope = query.get("scope", "")
        wanted = scope.split(",")
        if not scope or " " in scope or not set(wanted) <= SCOPES:
            return page("scope")
        redirect_uri = query.get("redirect_uri", "")
        if not any(_redirect_matches(p, redirect_uri) for p in k.redirect_uris):
            return page("redirect_uri")
        if not query.get("state"):
            return page("state")
        challenge = query.get("code_challenge", "")
        hex_ok = re.fullmatch(r"[0-9a-f]{64}", challenge) is not None
        b64_ok = k.accept_base64url_challenge and re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge)
        if not (hex_ok or b64_ok):
            return page("code_challenge")
        if query.get("code_challenge_method") != "S256":
            return page("code_challenge_method")
        if k.deny:
            answer = {
                "error": "access_denied",
                "error_description": "The user denied the request.",
                "state": query["state"],
            }
        else:
            granted = frozenset(k.granted_scopes if k.granted_scopes is not None else wanted)
            # Real codes hold characters that arrive percent-encoded, so decoding matters.
            code = secrets.token_urlsafe(24) + "*0!" + nineteen_digits() + ".va"
            with self.lock:
                self.codes[code] = Code(
                    self.client_key, redirect_uri, granted, challenge, self.now()
                )
            answer = {"code": code, "scopes": ",".join(sorted(granted)), "state": query["state"]}
        return 302, {"Location": f"{redirect_uri}?{urlencode(answer)}"}, ""

    def token(self, form: dict[str, str]) -> dict:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant type not set")
        if form.get("client_key") != self.client_key:
            raise OAuthError("invalid_client")
        if form.get("client_secret") != self.client_secret:
            raise OAuthError("invalid_client")
        with self.lock:
            if grant_type == "authorization_code":
                return self._exchange(form)
            if grant_type == "refresh_token":
                return self._refresh(form)
        raise OAuthError("unsupported_grant_type")

    def _exchange(self, form: dict[str, str]) -> dict:
        code = self.codes.get(form.get("code", ""))
        if code is None or code.used or self.now() - code.issued_at > self.knobs.code_ttl:
            raise OAuthError("invalid_grant")
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError(
                "invalid_request", "Redirect_uri is not matched with the uri when requesting code."
            )
        verifier = form.get("code_verifier", "")
        self.verifiers.append(verifier)
        digest = hashlib.sha256(verifier.encode()).digest()
        accepted = {digest.hex()}
        if self.knobs.accept_base64url_challenge:
            accepted.add(base64.urlsafe_b64encode(digest).rstrip(b"=").decode())
        if not verifier or code.challenge not in accepted:
            raise OAuthError("invalid_request", "Code verifier or code challenge is invalid.")
        return self._issue(code.scopes)

    def _refresh(self, form: dict[str, str]) -> dict:
        old = form.get("refresh_token", "")
        record = self.refresh_tokens.get(old)
        if record is None or not record.valid or record.expires_at < self.now():
            raise OAuthError("invalid_grant")
        if not self.knobs.rotate_refresh:
            return self._issue(record.scopes, keep_refresh=old)
        record.valid = False
        return self._issue(record.scopes)

    def _issue(self, scopes: frozenset[str], keep_refresh: str | None = None) -> dict:
        k = self.knobs
        access = "act." + secrets.token_urlsafe(32)
        refresh = keep_refresh or "rft." + secrets.token_urlsafe(32)
        if keep_refresh is None:
            self.refresh_tokens[refresh] = Refresh(
                self.user.open_id, scopes, self.now() + k.refresh_ttl
            )
        self.grants[access] = Grant(self.user.open_id, scopes, self.now() + k.access_ttl, refresh)
        return {
            "access_token": access,
            "expires_in": k.access_ttl,
            "open_id": self.user.open_id,
            "refresh_expires_in": k.refresh_ttl,
            "refresh_token": refresh,
            "scope": ",".join(sorted(scopes)),
            "token_type": "Bearer",
        }

    def revoke(self, form: dict[str, str]) -> dict:
        if (form.get("client_key"), form.get("client_secret")) != (
            self.client_key,
            self.client_secret,
        ):
            raise OAuthError("invalid_client")
        with self.lock:
            grant = self.grants.get(form.get("token", ""))
            if grant is None:
                raise OAuthError("invalid_request", "The token is invalid.")
            grant.revoked = True
            if grant.refresh_token in self.refresh_tokens:
                self.refresh_tokens[grant.refresh_token].valid = False
        return {}

    # --- the v2 API -------------------------------------------------------------------------

    def authorise(self, headers: dict[str, str], scopes: set[str]) -> tuple[str, Grant]:
        """Bearer check in TikTok's order: unknown, expired, then scope."""
        match = re.fullmatch(r"Bearer (\S+)", headers.get("authorization", ""))
        with self.lock:
            grant = self.grants.get(match.group(1)) if match else None
            if grant is None or grant.revoked:
                raise ApiError(401, "access_token_invalid", "The access token is invalid.")
            if grant.expires_at < self.now():
                raise ApiError(401, "access_token_invalid", "The access token has expired.")
            if not grant.scopes & scopes:
                raise ApiError(401, "scope_not_authorized", "The user did not authorize the scope.")
        if self.on_api_call:
            self.on_api_call(grant)
        return match.group(1), grant

    def rate_limit(self, token: str, bucket: str) -> None:
        with self.lock:
            hits = self._hits[(token, bucket)]
            now = time.monotonic()
            while hits and now - hits[0] > self.knobs.rate_window_s:
                hits.popleft()
            if len(hits) >= self.knobs.rate_limits[bucket]:
                raise ApiError(
                    self.knobs.rate_limit_status, "rate_limit_exceeded", "Rate limit exceeded."
                )
            hits.append(now)

    def privacy_options(self) -> list[str]:
        if self.knobs.account_private:
            return ["FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
        return ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]

    def creator_info(self, token: str) -> dict:
        self.rate_limit(token, "creator_info")
        k = self.knobs
        if k.creator_info_error:
            raise ApiError(200, k.creator_info_error, "Please try again later.")
        return {
            "creator_avatar_url": "https://example.invalid/avatar.jpeg",
            "creator_username": self.user.username,
            "creator_nickname": self.user.display_name,
            "privacy_level_options": self.privacy_options(),
            "comment_disabled": k.comment_disabled,
            "duet_disabled": k.duet_disabled or k.account_private,
            "stitch_disabled": k.stitch_disabled or k.account_private,
            "max_video_post_duration_sec": k.max_video_post_duration_sec,
        }

    def init_direct(self, token: str, grant: Grant, body: Any) -> dict:
        self.rate_limit(token, "init")
        k = self.knobs
        post_info = body.get("post_info") if isinstance(body, dict) else None
        source_info = body.get("source_info") if isinstance(body, dict) else None
        if not isinstance(post_info, dict) or not isinstance(source_info, dict):
            raise ApiError(400, "invalid_params", "post_info and source_info are required.")
        privacy = post_info.get("privacy_level")
        if privacy not in PRIVACY_LEVELS:
            raise ApiError(400, "invalid_params", "privacy_level is invalid.")
        title = post_info.get("title", "")
        if not isinstance(title, str) or len(title.encode("utf-16-le")) // 2 > 2200:
            raise ApiError(400, "invalid_params", "The title is invalid.")
        for name in BOOL_FIELDS:
            if name in post_info and not isinstance(post_info[name], bool):
                raise ApiError(400, "invalid_params", f"{name} is invalid.")
        cover = post_info.get("video_cover_timestamp_ms", 0)
        if not isinstance(cover, int) or isinstance(cover, bool):
            raise ApiError(400, "invalid_params", "video_cover_timestamp_ms is invalid.")
        if privacy not in self.privacy_options():
            raise ApiError(403, "privacy_level_option_mismatch", "privacy_level is not allowed.")
        if not k.audited and not k.account_private:
            raise ApiError(
                403,
                "unaudited_client_can_only_post_to_private_accounts",
                "Please review our integration guidelines.",
            )
        if not k.audited and privacy != "SELF_ONLY":
            if k.unaudited_non_self_only == "reject":
                raise ApiError(
                    403,
                    "unaudited_client_can_only_post_to_private_accounts",
                    "Please review our integration guidelines.",
                )
            post_info = {**post_info, "privacy_level": "SELF_ONLY"}
        with self.lock:
            if self.direct_posts >= k.direct_post_cap:
                raise ApiError(403, "spam_risk_too_many_posts", "Too many posts.")
        plan = check_source(source_info, k)
        with self.lock:
            self.direct_posts += 1
            return self._new_task("direct", grant, plan, post_info)

    def init_inbox(self, token: str, grant: Grant, body: Any) -> dict:
        self.rate_limit(token, "inbox_init")
        if not isinstance(body, dict) or not isinstance(body.get("source_info"), dict):
            raise ApiError(400, "invalid_params", "source_info is required.")
        if set(body) != {"source_info"}:
            raise ApiError(400, "invalid_params", "Only source_info is accepted.")
        with self.lock:
            if self.pending_shares >= self.knobs.inbox_pending_cap:
                raise ApiError(403, "spam_risk_too_many_pending_share", "Too many pending shares.")
        plan = check_source(body["source_info"], self.knobs)
        with self.lock:
            self.pending_shares += 1
            return self._new_task("inbox", grant, plan, None)

    def _new_task(self, kind: str, grant: Grant, plan: tuple[int, int, int], post_info) -> dict:
        size, chunk, count = plan
        prefix = "v_pub_file~v2-1." if kind == "direct" else "v_inbox_file~v2."
        task = Task(
            publish_id=prefix + nineteen_digits(),
            kind=kind,
            open_id=grant.open_id,
            video_size=size,
            chunk_size=chunk,
            count=count,
            upload_id=nineteen_digits(),
            upload_token=secrets.token_urlsafe(16),
            issued_at=self.now(),
            post_info=post_info,
        )
        self.tasks[task.publish_id] = task
        query = urlencode({"upload_id": task.upload_id, "upload_token": task.upload_token})
        return {"publish_id": task.publish_id, "upload_url": f"{self.base_url}/upload/?{query}"}

    def status(self, token: str, grant: Grant, body: Any) -> dict:
        self.rate_limit(token, "status")
        publish_id = body.get("publish_id") if isinstance(body, dict) else None
        with self.lock:
            task = self.tasks.get(publish_id or "")
            if task is None:
                raise ApiError(400, "invalid_publish_id", "The publish_id does not exist.")
            if task.open_id != grant.open_id:
                raise ApiError(400, "token_not_authorized_for_specified_publish_id")
            return self._progress(task)

    def _progress(self, task: Task) -> dict:
        k = self.knobs
        if not task.complete:
            if self.now() - task.issued_at > k.upload_ttl:
                return {"status": "FAILED", "fail_reason": "internal"}
            return {"status": "PROCESSING_UPLOAD", "uploaded_bytes": task.received}
        task.polls_after_upload += 1
        polls = task.polls_after_upload
        if polls <= k.processing_polls:
            return {"status": "PROCESSING_UPLOAD", "uploaded_bytes": task.video_size}
        if k.fail_reason:
            return {"status": "FAILED", "fail_reason": k.fail_reason, "uploaded_bytes": 0}
        if task.kind == "inbox":
            if k.user_posts_draft and polls > k.processing_polls + 1:
                return {"status": "PUBLISH_COMPLETE", "publicaly_available_post_id": []}
            return {"status": "SEND_TO_USER_INBOX"}
        ids: list[int] = []
        public = task.post_info and task.post_info["privacy_level"] == "PUBLIC_TO_EVERYONE"
        if k.audited and public and polls > k.processing_polls + k.moderation_polls:
            ids = [int(task.upload_id)]
        return {
            "status": "PUBLISH_COMPLETE",
            "publicaly_available_post_id": ids,
            "uploaded_bytes": task.video_size,
        }

    def user_info(self, fields: str) -> dict:
        user = {
            "open_id": self.user.open_id,
            "union_id": "union-" + self.user.open_id,
            "avatar_url": "https://example.invalid/avatar.jpeg",
            "display_name": self.user.display_name,
        }
        return {"user": {f: user[f] for f in fields.split(",") if f in user}}

    def find_upload(self, query: dict[str, str]) -> Task | None:
        with self.lock:
            for task in self.tasks.values():
                if task.upload_id == query.get("upload_id"):
                    return task if task.upload_token == query.get("upload_token") else None
        return None


def check_source(source: dict, k: Knobs) -> tuple[int, int, int]:
    """(video_size, chunk_size, count) if FILE_UPLOAD's source_info keeps the chunk rules as
    TikTok enforces them (stricter than it documents), else the ApiError TikTok answers."""
    if source.get("source") == "PULL_FROM_URL":
        raise ApiError(403, "url_ownership_unverified", "The URL ownership is unverified.")
    if source.get("source") != "FILE_UPLOAD":
        raise ApiError(400, "invalid_params", "source is invalid.")
    numbers = [source.get(n) for n in ("video_size", "chunk_size", "total_chunk_count")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in numbers):
        raise ApiError(400, "invalid_params", "The request body is invalid.")
    size, chunk, count = numbers
    if size > 4 * 1024**3:
        raise ApiError(400, "invalid_params", "The video size is invalid.")
    if count == 1:
        if chunk != size or size > k.max_chunk:
            raise ApiError(400, "invalid_params", "The chunk size is invalid")
    else:
        if chunk < k.min_chunk or chunk > k.max_chunk:
            raise ApiError(400, "invalid_params", "The chunk size is invalid")
        if size < k.min_chunk or count != size // chunk or count > 1000:
            raise ApiError(400, "invalid_params", "The total chunk count is invalid")
        if size - (count - 1) * chunk > k.max_last:
            raise ApiError(400, "invalid_params", "The chunk size is invalid")
    return size, chunk, count


def _redirect_matches(pattern: str, uri: str) -> bool:
    """TikTok's desktop rule: the exact URI, with `*` standing for any port."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        return False
    regex = re.escape(pattern).replace(r"\*", r"\d+")
    return re.fullmatch(regex, uri) is not None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    @property
    def fake(self) -> FakeTikTok:
        return self.server.fake

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read the recorded requests instead."""

    # --- plumbing ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _read_body(self, limit: int = 1 << 20) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, limit)) if length else b""

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json; charset=UTF-8",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _api_error(self, error: ApiError) -> None:
        body: dict[str, Any] = {
            "error": {"code": error.code, "message": error.message, "log_id": log_id()}
        }
        if not self.fake.knobs.bare_errors:
            body = {"data": {}, **body}
        self._json(error.status, body)

    def _record(self, **extra: Any) -> Recorded:
        url = urlsplit(self.path)
        record = Recorded(
            self.command,
            url.path,
            {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
            self._headers(),
            **extra,
        )
        with self.fake.lock:
            self.fake.requests.append(record)
        return record

    # --- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        record = self._record()
        if record.path == "/v2/auth/authorize/":
            status, headers, text = self.fake.authorize(record.query)
            self._send(status, text.encode(), headers, "text/html; charset=utf-8")
        elif record.path == "/v2/user/info/":
            try:
                self.fake.authorise(record.headers, {"user.info.basic"})
                data = self.fake.user_info(record.query.get("fields", ""))
            except ApiError as error:
                self._api_error(error)
                return
            self._json(
                200, {"data": data, "error": {"code": "ok", "message": "", "log_id": log_id()}}
            )
        else:
            self._send(404, b"not found", content_type="text/plain")

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        path = urlsplit(self.path).path
        content_type = self.headers.get("Content-Type", "")
        if path.startswith("/v2/oauth/"):
            form = None
            if content_type.split(";")[0].strip() == "application/x-www-form-urlencoded":
                form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            self._record(form=form, body_size=len(raw))
            self._oauth(path, form)
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        self._record(json=body, body_size=len(raw))
        self._api(path, content_type, body)

    def _oauth(self, path: str, form: dict[str, str] | None) -> None:
        try:
            if form is None:
                raise OAuthError("invalid_request", "grant type not set")
            if path == "/v2/oauth/token/":
                answer = self.fake.token(form)
            elif path == "/v2/oauth/revoke/":
                answer = self.fake.revoke(form)
            else:
                self._send(404, b"not found", content_type="text/plain")
                return
        except OAuthError as error:
            self._json(
                self.fake.knobs.oauth_error_status,
                {"error": error.code, "error_description": error.description, "log_id": log_id()},
            )
            return
        self._json(200, answer)

    def _api(self, path: str, content_type: str, body: Any) -> None:
        fake = self.fake
        routes = {
            "/v2/post/publish/creator_info/query/": ({"video.publish"}, "creator_info"),
            "/v2/post/publish/video/init/": ({"video.publish"}, "init_direct"),
            "/v2/post/publish/inbox/video/init/": ({"video.upload"}, "init_inbox"),
            "/v2/post/publish/status/fetch/": ({"video.upload", "video.publish"}, "status"),
            "/v2/post/publish/cancel/": ({"video.upload", "video.publish"}, "cancel"),
        }
        if path not in routes:
            self._send(404, b"not found", content_type="text/plain")
            return
        scopes, action = routes[path]
        try:
            token, grant = fake.authorise(self._headers(), scopes)
            if body is not None and content_type.split(";")[0].strip() != "application/json":
                raise ApiError(400, "invalid_params", "Content-Type must be application/json.")
            if body is ValueError:
                raise ApiError(400, "invalid_params", "The request body is not JSON.")
            if action == "creator_info":
                if body not in (None, {}):
                    raise ApiError(400, "invalid_params", "The request body must be empty.")
                data = fake.creator_info(token)
            elif action == "init_direct":
                data = fake.init_direct(token, grant, body)
            elif action == "init_inbox":
                data = fake.init_inbox(token, grant, body)
            elif action == "status":
                data = fake.status(token, grant, body)
            else:
                raise ApiError(400, "publish_not_cancellable", "Only pulls can be cancelled.")
        except ApiError as error:
            self._api_error(error)
            return
        self._json(200, {"data": data, "error": {"code": "ok", "message": "", "log_id": log_id()}})

    def do_PUT(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length_header = self.headers.get("Content-Length")
        record = self._record(body_size=int(length_header or 0))
        if url.path not in ("/upload/", "/video/"):
            self._drain(length_header)
            self._send(404, b"", content_type="text/plain")
            return
        status, headers = self._upload(query, record)
        self._send(status, b"", headers, content_type="text/plain")

    def _drain(self, length_header: str | None) -> None:
        left = int(length_header or 0)
        while left > 0:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                break
            left -= len(block)

    def _upload(self, query: dict[str, str], record: Recorded) -> tuple[int, dict[str, str]]:
        """One chunk PUT, checked as TikTok does; answers 206 until the last, then 201."""
        fake, k = self.fake, self.fake.knobs
        length_header = self.headers.get("Content-Length")
        if length_header is None or "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.close_connection = True
            return 400, {}
        task = fake.find_upload(query)
        if task is None:
            self._drain(length_header)
            return 404, {}
        if fake.now() - task.issued_at > k.upload_ttl:
            self._drain(length_header)
            return 403, {}
        injected = k.chunk_errors.get(task.chunks)
        if injected:
            self._drain(length_header)
            return injected.pop(0), {}
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
        if (
            self.headers.get("Content-Type") not in UPLOAD_TYPES
            or match is None
            or int(match.group(3)) != task.video_size
        ):
            self._drain(length_header)
            return 400, {}
        first, last = int(match.group(1)), int(match.group(2))
        length = int(length_header)
        if (first, last) == task.last_range and k.idempotent_resend:
            self._drain(length_header)
            return task.last_status, self._range_header(task)
        if first != task.received:
            self._drain(length_header)
            return 416, {}
        expected = (
            task.chunk_size
            if task.chunks < task.count - 1
            else task.video_size - (task.count - 1) * task.chunk_size
        )
        if length != last - first + 1 or length != expected:
            self._drain(length_header)
            return 400, {}
        left = length
        while left:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                self.close_connection = True
                return 400, {}
            task.sha256.update(block)
            left -= len(block)
        with fake.lock:
            task.received += length
            task.chunks += 1
            task.ranges.append(self.headers["Content-Range"])
            task.last_range = (first, last)
            task.last_status = 201 if task.complete else 206
        return task.last_status, self._range_header(task)

    @staticmethod
    def _range_header(task: Task) -> dict[str, str]:
        return {"Content-Range": f"bytes 0-{task.received - 1}/{task.video_size}"}

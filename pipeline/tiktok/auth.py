"""Logging in to TikTok: PKCE desktop login through a loopback listener, the token store, and
keeping the access token fresh (saving each rotated refresh token before using the new token).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socketserver
import string
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from pipeline.errors import FeverdreamError
from pipeline.store import atomic_write_json
from pipeline.tiktok.config import Credentials, Settings
from pipeline.tiktok.errors import RELOGIN, TikTokError, unreachable

log = logging.getLogger(__name__)

SCOPES = ("user.info.basic", "video.upload", "video.publish")
POSTING_SCOPES = {"video.upload", "video.publish"}
DEFAULT_PORT = 3455
CALLBACK_PATH = "/callback/"
LOGIN_TIMEOUT_S = 300.0
# Refresh ahead of expiry: TikTok's access tokens now last 2 hours (once 24), so never assume.
REFRESH_MARGIN_S = 300.0
VERIFIER_ALPHABET = string.ascii_letters + string.digits + "-._~"


class NotLoggedIn(FeverdreamError):
    """No usable TikTok login on this machine."""


def make_pkce() -> tuple[str, str]:
    """A fresh code_verifier and its challenge: TikTok's desktop flow wants the lowercase hex
    SHA-256 of the verifier, not RFC 7636's base64url."""
    verifier = "".join(secrets.choice(VERIFIER_ALPHABET) for _ in range(64))
    return verifier, hashlib.sha256(verifier.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Token:
    """A user's tokens and what they allow; tokens are kept out of repr so they never print."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    open_id: str
    scopes: frozenset[str]
    expires_at: float
    refresh_expires_at: float

    @classmethod
    def from_response(cls, body: dict, previous: Token | None = None) -> Token:
        """Build from /v2/oauth/token/'s flat answer; lifetimes are relative, so anchor them now."""
        now = time.time()
        scope = body.get("scope")
        return cls(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token") or (previous.refresh_token if previous else ""),
            open_id=body.get("open_id") or (previous.open_id if previous else ""),
            scopes=frozenset(s for s in scope.split(",") if s)
            if isinstance(scope, str)
            else (previous.scopes if previous else frozenset()),
            expires_at=now + float(body.get("expires_in", 0)),
            refresh_expires_at=now + float(body["refresh_expires_in"])
            if "refresh_expires_in" in body
            else (previous.refresh_expires_at if previous else now),
        )

    def to_json(self) -> dict:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "open_id": self.open_id,
            "scope": ",".join(sorted(self.scopes)),
            "expires_at": self.expires_at,
            "refresh_expires_at": self.refresh_expires_at,
        }

    @classmethod
    def from_json(cls, data: dict) -> Token:
        return cls(
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            open_id=data.get("open_id", ""),
            scopes=frozenset(s for s in data.get("scope", "").split(",") if s),
            expires_at=float(data["expires_at"]),
            refresh_expires_at=float(data["refresh_expires_at"]),
        )


@dataclass(frozen=True)
class TokenStore:
    """The token file: readable by its owner only, replaced atomically so a crash mid-write
    never loses the one refresh token that still works."""

    path: Path

    def load(self) -> Token | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Token.from_json(data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise NotLoggedIn(f"the TikTok token file {self.path} is damaged: {RELOGIN}") from None

    def load_required(self) -> Token:
        token = self.load()
        if token is None:
            raise NotLoggedIn("not logged in to TikTok: run `feverdream tiktok login` first")
        return token

    def save(self, token: Token) -> None:
        # mkstemp creates the temporary file 0600 before a byte is written; the rename keeps it.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_json(self.path, token.to_json(), mode=0o600)

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _oauth_body(response: httpx.Response) -> dict:
    """The JSON of an /v2/oauth/ answer, or TikTokError: failures may come with HTTP 200, so the
    body decides, not the status."""
    try:
        body = response.json()
    except ValueError:
        raise TikTokError(
            "bad_response", f"HTTP {response.status_code}", status=response.status_code
        ) from None
    if not isinstance(body, dict):
        raise TikTokError(
            "bad_response", f"HTTP {response.status_code}", status=response.status_code
        )
    error = body.get("error")
    if isinstance(error, str) and error:
        raise TikTokError(
            error,
            str(body.get("error_description", "")),
            str(body.get("log_id", "")),
            status=response.status_code,
        )
    if isinstance(error, dict) and error.get("code", "ok") != "ok":
        raise TikTokError(
            str(error["code"]),
            str(error.get("message", "")),
            str(error.get("log_id", "")),
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise TikTokError(f"http_{response.status_code}", status=response.status_code)
    return body


@dataclass
class OAuth:
    """TikTok's /v2/oauth/ endpoints; every request is a form, as TikTok refuses JSON there."""

    http: httpx.Client
    settings: Settings
    credentials: Credentials

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> Token:
        return self._token_request(
            {
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )

    def refresh(self, token: Token) -> Token:
        return self._token_request(
            {"grant_type": "refresh_token", "refresh_token": token.refresh_token}, previous=token
        )

    def revoke(self, token: Token) -> None:
        _oauth_body(self._form("/v2/oauth/revoke/", {"token": token.access_token}))

    def _token_request(self, form: dict[str, str], previous: Token | None = None) -> Token:
        body = _oauth_body(self._form("/v2/oauth/token/", form))
        if not body.get("access_token"):
            raise TikTokError("bad_response", "the token answer holds no access_token")
        return Token.from_response(body, previous)

    def _form(self, path: str, form: dict[str, str]) -> httpx.Response:
        data = {
            "client_key": self.credentials.client_key,
            "client_secret": self.credentials.client_secret,
            **form,
        }
        log.debug("POST %s (%s)", path, form.get("grant_type", "revoke"))
        try:
            return self.http.post(
                f"{self.settings.api_base}{path}", data=data, headers={"Cache-Control": "no-cache"}
            )
        except httpx.TransportError as error:
            raise unreachable(self.settings.api_base, error) from None


@dataclass
class Session:
    """The logged-in user: hands out a fresh access token and refreshes it when TikTok says so."""

    http: httpx.Client
    settings: Settings
    token: Token

    @classmethod
    def load(cls, http: httpx.Client, settings: Settings) -> Session:
        return cls(http, settings, TokenStore(settings.token_path).load_required())

    def access_token(self) -> str:
        if self.token.expires_at - time.time() < REFRESH_MARGIN_S:
            self.refresh()
        return self.token.access_token

    def refresh(self) -> None:
        """Trade the refresh token for new tokens; TikTok rotates refresh tokens (the old one
        dies at once), so the new pair is on disk before anything uses it."""
        if self.token.refresh_expires_at <= time.time():
            raise NotLoggedIn(f"your TikTok login has expired: {RELOGIN}")
        log.debug("refreshing the TikTok access token")
        try:
            token = OAuth(self.http, self.settings, Credentials.from_env()).refresh(self.token)
        except TikTokError as error:
            if error.code == "invalid_grant":
                raise NotLoggedIn(
                    f"TikTok no longer accepts your login (it expired or was revoked): {RELOGIN}"
                ) from None
            raise
        TokenStore(self.settings.token_path).save(token)
        self.token = token


# --- the desktop login -----------------------------------------------------------------------


def authorization_url(
    settings: Settings, credentials: Credentials, redirect_uri: str, state: str, challenge: str
) -> str:
    query = urlencode(
        {
            "client_key": credentials.client_key,
            "scope": ",".join(SCOPES),
            "redirect_uri": redirect_uri,
            "state": state,
            "response_type": "code",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{settings.authorize_url}?{query}"


class _CallbackServer(socketserver.TCPServer):
    """Answers TikTok's redirect on 127.0.0.1 and remembers its query; nothing else."""

    allow_reuse_address = True

    def __init__(self, port: int, state: str):
        self.expected_state = state
        self.callback: dict[str, str] | None = None
        super().__init__(("127.0.0.1", port), _CallbackHandler)


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        url = urlsplit(self.path)
        if url.path != CALLBACK_PATH:
            self._reply(404, "Not found.")
            return
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.server.callback = params
        if params.get("state") != self.server.expected_state:
            self._reply(400, "This login link is stale or was not started by feverdream.")
        elif "error" in params or not params.get("code"):
            self._reply(400, "TikTok did not log you in. See the terminal for why.")
        else:
            self._reply(200, "Logged in. You can close this tab and go back to the terminal.")

    def _reply(self, status: int, text: str) -> None:
        page = f"<!doctype html><title>feverdream</title><p>{text}</p>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:
        # The default logs the request line, which carries the authorization code.
        log.debug("callback listener answered %s", self.command)


@dataclass
class LoginResult:
    token: Token
    missing_scopes: frozenset[str]


def login(
    http: httpx.Client,
    settings: Settings,
    credentials: Credentials,
    *,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    say: Callable[[str], None],
    timeout_s: float = LOGIN_TIMEOUT_S,
) -> LoginResult:
    """Run the desktop login: listen on 127.0.0.1, send the user to TikTok, trade the code for
    tokens and save them. Port 0 picks a free port (needs a `127.0.0.1:*` redirect URI)."""
    verifier, challenge = make_pkce()
    state = secrets.token_urlsafe(24)
    try:
        server = _CallbackServer(port, state)
    except OSError as error:
        raise FeverdreamError(
            f"cannot listen on 127.0.0.1:{port} for TikTok's answer ({error.strerror}): "
            "pass another --port that your app's redirect URIs allow"
        ) from None
    with server:
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}{CALLBACK_PATH}"
        url = authorization_url(settings, credentials, redirect_uri, state, challenge)
        say("Open this link to log in to TikTok:")
        say(url)
        if open_browser:
            webbrowser.open(url)
        params = _await_callback(server, timeout_s)
    if params.get("state") != state:
        raise FeverdreamError(
            "the answer to the login did not come from the login feverdream started (its state "
            f"differs), so it was ignored: {RELOGIN} and use only the newest link"
        )
    if "error" in params:
        raise TikTokError(params["error"], params.get("error_description", ""))
    if not params.get("code"):
        raise TikTokError("invalid_request", "the callback carries no code")
    token = OAuth(http, settings, credentials).exchange_code(params["code"], redirect_uri, verifier)
    if not token.scopes & POSTING_SCOPES:
        raise FeverdreamError(
            f"TikTok granted only {', '.join(sorted(token.scopes)) or 'nothing'}; feverdream "
            "needs video.upload (drafts) or video.publish (direct posts): "
            f"{RELOGIN} and leave every permission switched on"
        )
    TokenStore(settings.token_path).save(token)
    return LoginResult(token, frozenset(SCOPES) - token.scopes)


def _await_callback(server: _CallbackServer, timeout_s: float) -> dict[str, str]:
    """Serve until TikTok's redirect arrives; other requests (a browser's favicon) are
    answered 404 and do not end the wait."""
    deadline = time.monotonic() + timeout_s
    server.timeout = 0.5
    while server.callback is None:
        if time.monotonic() > deadline:
            raise FeverdreamError(
                f"no answer from TikTok within {timeout_s:.0f} s: run `feverdream tiktok login` "
                "again and finish the login in the browser"
            )
        server.handle_request()
    return server.callback

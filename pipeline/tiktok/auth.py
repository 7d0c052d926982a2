"""Logging in to TikTok: PKCE desktop login through a loopback listener or by pasting back the
address TikTok redirected to, the token store, and keeping the access token fresh (saving each
rotated refresh token before using the new token).
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

from pipeline.errors import FeverdreamError, NotLoggedIn
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
            raise NotLoggedIn(
                f"not logged in to TikTok (no token file at {self.path}): run `feverdream tiktok "
                "login` first, or `feverdream tiktok login --paste` where no browser can reach "
                "this machine (Colab, SSH)"
            )
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
        params = _query_params(url.query)
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


@dataclass(frozen=True)
class _Attempt:
    """One login's secrets, made fresh for each: the PKCE pair, the state TikTok must echo, and
    the redirect URI that the authorization and the code exchange must agree on."""

    redirect_uri: str
    state: str = field(repr=False)
    verifier: str = field(repr=False)
    challenge: str

    @classmethod
    def start(cls, redirect_uri: str, state: str | None = None) -> _Attempt:
        verifier, challenge = make_pkce()
        return cls(redirect_uri, state or secrets.token_urlsafe(24), verifier, challenge)

    def url(self, settings: Settings, credentials: Credentials) -> str:
        return authorization_url(
            settings, credentials, self.redirect_uri, self.state, self.challenge
        )


def _callback_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


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
    state = secrets.token_urlsafe(24)
    try:
        server = _CallbackServer(port, state)
    except OSError as error:
        raise FeverdreamError(
            f"cannot listen on 127.0.0.1:{port} for TikTok's answer ({error.strerror}): "
            "pass another --port that your app's redirect URIs allow, or log in with --paste"
        ) from None
    with server:
        attempt = _Attempt.start(_callback_uri(server.server_address[1]), state)
        url = attempt.url(settings, credentials)
        say("Open this link to log in to TikTok:")
        say(url)
        if open_browser:
            webbrowser.open(url)
        params = _await_callback(server, timeout_s)
    return _redeem(http, settings, credentials, attempt, params)


PASTE_TRIES = 3
WHAT_TO_PASTE = (
    "paste the whole address your browser ended up on after you agreed on TikTok's page; it "
    "starts with http://127.0.0.1: and holds ?code= (the code alone works too)"
)


def login_by_paste(
    http: httpx.Client,
    settings: Settings,
    credentials: Credentials,
    *,
    port: int = DEFAULT_PORT,
    say: Callable[[str], None],
    ask: Callable[[str], str],
) -> LoginResult:
    """Log in where no browser can reach this machine (Colab, SSH): the user opens the link on
    any device, and pastes back the address TikTok redirected to (whose page does not load, as
    nothing listens there) through `ask`. The redirect URI is the same loopback one the app
    registered for `login`. The address's state must be this login's; a bare code, having
    none, is taken on trust. Empty or unreadable answers are asked again, up to 3 times."""
    if port <= 0:
        raise FeverdreamError(
            "logging in by pasting needs a fixed port, the one in your app's redirect URI "
            f"(default {DEFAULT_PORT}): pass --port N, not 0"
        )
    attempt = _Attempt.start(_callback_uri(port))
    say("Open this link on any device (a phone works), log in to TikTok and agree:")
    say(attempt.url(settings, credentials))
    say(
        f"TikTok then sends your browser to {attempt.redirect_uri}, and that page will not "
        "load: this is expected. Copy the whole address your browser ends up on (it holds "
        "?code=) and paste it here."
    )
    for tries_left in reversed(range(PASTE_TRIES)):
        try:
            pasted = ask("Address TikTok sent you to: ")
        except EOFError:
            raise FeverdreamError(f"nothing was pasted (input ended): {WHAT_TO_PASTE}") from None
        try:
            params, has_state = _pasted_callback(pasted)
            break
        except FeverdreamError as error:
            if not tries_left:
                raise
            say(f"{error}. Try again.")
    return _redeem(http, settings, credentials, attempt, params, check_state=has_state)


def _pasted_callback(pasted: str) -> tuple[dict[str, str], bool]:
    """The callback's parameters from what the user pasted (the redirected address, its query
    string, or the bare code), and whether they carry a state to check. Never echoes the paste:
    it holds the code."""
    text = pasted.strip().strip("\"'<>`").strip()
    if not text:
        raise FeverdreamError(f"nothing was pasted: {WHAT_TO_PASTE}")
    query = text.split("?", 1)[1] if "?" in text else text
    params = _query_params(query.split("#", 1)[0])
    if "code_challenge" in params or "client_key" in params:
        raise FeverdreamError(
            "that is the login link itself: open it in a browser, log in, and paste the address "
            "the browser ends up on afterwards"
        )
    if "state" in params or "error" in params or "code" in params:
        return params, "state" in params
    if any(c.isspace() or c in "/:?&=#" for c in text):
        raise FeverdreamError(
            f"feverdream cannot find a login code in what was pasted: {WHAT_TO_PASTE}"
        )
    # A bare code, as copied from the address bar: percent-encoded like any query value.
    return _query_params(f"code={text}"), False


def _query_params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _redeem(
    http: httpx.Client,
    settings: Settings,
    credentials: Credentials,
    attempt: _Attempt,
    params: dict[str, str],
    *,
    check_state: bool = True,
) -> LoginResult:
    """Trade TikTok's callback parameters for a saved token, as both logins end: the state must
    be this login's, TikTok's refusal is reported in its own words, and only a token that can
    post is kept."""
    if check_state and params.get("state") != attempt.state:
        raise FeverdreamError(
            "the answer to the login did not come from the login feverdream started (its state "
            "differs: it is from an older link, or someone else's), so it was ignored: "
            f"{RELOGIN} and use only the newest link"
        )
    if "error" in params:
        raise TikTokError(params["error"], params.get("error_description", ""))
    if not params.get("code"):
        raise TikTokError("invalid_request", "the callback carries no code")
    try:
        token = OAuth(http, settings, credentials).exchange_code(
            params["code"], attempt.redirect_uri, attempt.verifier
        )
    except TikTokError as error:
        if error.code != "invalid_grant":
            raise
        raise TikTokError(
            error.code,
            error.message,
            error.log_id,
            status=error.status,
            hint="TikTok did not take the login code (a code works once, expires soon, and "
            f"only with the link it came from): {RELOGIN}",
        ) from None
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

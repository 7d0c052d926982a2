"""Logging in where no browser can reach feverdream (Colab, SSH): the user opens the link on
another device and pastes back the address TikTok sent that browser to, against the fake TikTok.

The "other device" is httpx following the printed link without following TikTok's redirect:
nothing listens on 127.0.0.1:3455, so the address in the redirect is all the user ever sees."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import httpx
import pytest
from fake_tiktok import FakeTikTok
from test_tiktok_auth import token_path

from pipeline import tiktok
from pipeline.cli import main
from pipeline.errors import FeverdreamError

REPO = Path(__file__).resolve().parents[1]
REGISTERED = "http://127.0.0.1:3455/callback/"


def redirected_address(link: str) -> str:
    """What the browser's address bar shows after logging in on TikTok's page."""
    answer = httpx.get(link, timeout=10)  # the fake consents at once and redirects
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


class User:
    """Reads what feverdream says and answers each question with the next paste, made from the
    address the login link leads to."""

    def __init__(self, *pastes: str | Callable[[str], str]):
        self.pastes = list(pastes)
        self.said: list[str] = []
        self.asked: list[str] = []
        self.pasted: list[str] = []

    def say(self, line: str) -> None:
        self.said.append(line)

    def ask(self, prompt: str) -> str:
        self.asked.append(prompt)
        paste = self.pastes.pop(0)
        self.pasted.append(paste(redirected_address(self.link)) if callable(paste) else paste)
        return self.pasted[-1]

    @property
    def link(self) -> str:
        authorize = os.environ["FEVERDREAM_TIKTOK_AUTHORIZE"]
        (link,) = [line for line in self.said if line.startswith(authorize)]
        return link

    @property
    def output(self) -> str:
        return "\n".join(self.said + self.asked)


def whole(address: str) -> str:
    return address


def login(user: User) -> str:
    return tiktok.login(paste=True, ask=user.ask, say=user.say)


def assert_logged_in(fake: FakeTikTok) -> None:
    path = token_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["access_token"] in fake.grants
    assert saved["refresh_token"] in fake.refresh_tokens


def assert_nothing_secret(fake: FakeTikTok, text: str) -> None:
    assert fake.codes, "no code was issued, so this proves nothing"
    # a code is a secret as it arrives too: percent-encoded in the address
    codes = [form for code in fake.codes for form in (code, quote_plus(code), quote(code))]
    for secret in [*fake.secrets(), *codes]:
        assert secret and secret not in text


def test_the_pasted_address_logs_in_with_the_registered_uri_and_saves_a_private_token(
    fake: FakeTikTok, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="pipeline")  # not httpcore: it logs the "browser"
    user = User(whole)
    assert login(user) == f"Fever Tester (open_id {fake.user.open_id})"
    assert_logged_in(fake)

    said = user.output
    assert "any device" in said and "will not load" in said and "paste it here" in said
    query = {k: v[0] for k, v in parse_qs(urlsplit(user.link).query).items()}
    assert query["redirect_uri"] == REGISTERED
    (exchange,) = fake.requests_to("/v2/oauth/token/")
    assert exchange.form["redirect_uri"] == REGISTERED
    verifier = exchange.form["code_verifier"]
    assert hashlib.sha256(verifier.encode()).hexdigest() == query["code_challenge"]
    assert "Logged in to TikTok as Fever Tester" in said
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pipeline"))
    assert "POST /v2/oauth/token/" in logged  # so the debug log was on
    assert_nothing_secret(fake, said + logged)


def test_the_query_string_alone_in_quotes_and_spaces_logs_in(fake: FakeTikTok):
    user = User(lambda address: f"  '{urlsplit(address).query}'\n")
    login(user)
    assert_logged_in(fake)


def test_the_bare_code_as_the_address_bar_shows_it_logs_in(fake: FakeTikTok):
    def code_only(address: str) -> str:
        encoded = urlsplit(address).query.split("code=", 1)[1].split("&", 1)[0]
        assert "%" in encoded  # the fake's codes hold characters that arrive percent-encoded
        return encoded

    login(User(code_only))
    assert_logged_in(fake)


def test_an_address_with_another_state_is_refused_and_its_code_not_used(fake: FakeTikTok):
    def from_an_older_link(address: str) -> str:
        state = parse_qs(urlsplit(address).query)["state"][0]
        return address.replace(state, "an-older-login")

    user = User(from_an_older_link)
    with pytest.raises(FeverdreamError, match="did not come from the login feverdream started"):
        login(user)
    assert fake.requests_to("/v2/oauth/token/") == []
    assert not token_path().exists()


def test_a_denied_login_is_reported_in_tiktoks_words(fake: FakeTikTok):
    fake.knobs.deny = True
    with pytest.raises(tiktok.TikTokError) as refused:
        login(User(whole))
    assert refused.value.code == "access_denied"
    assert "The user denied the request." in str(refused.value)
    assert "allow access" in str(refused.value)
    assert not token_path().exists()


def test_empty_and_unreadable_pastes_say_what_to_paste_and_ask_again(fake: FakeTikTok):
    user = User("  \n", "it did not work", whole)
    login(user)
    assert len(user.asked) == 3
    said = user.output
    assert "nothing was pasted" in said
    assert "cannot find a login code" in said
    assert "the whole address your browser ended up on" in said
    assert_logged_in(fake)


def test_three_unreadable_pastes_give_up_with_what_to_paste(fake: FakeTikTok):
    user = User("https://example.com/", "", lambda address: user.link)
    with pytest.raises(FeverdreamError, match="that is the login link itself"):
        login(user)
    assert "cannot find a login code" in user.output and "nothing was pasted" in user.output
    assert fake.requests_to("/v2/oauth/token/") == []
    assert not token_path().exists()


def test_a_code_used_once_already_is_refused_with_what_to_do(fake: FakeTikTok):
    first = User(whole)
    login(first)
    token_path().unlink()
    used_code = parse_qs(urlsplit(first.pasted[0]).query)["code"][0]
    with pytest.raises(tiktok.TikTokError, match="did not take the login code") as refused:
        login(User(used_code))
    assert refused.value.code == "invalid_grant"
    assert not token_path().exists()


def test_the_cli_login_paste_reads_the_address_from_stdin(fake: FakeTikTok):
    process = subprocess.Popen(
        # -v: the debug log must keep the code and tokens out too
        [sys.executable, "-m", "pipeline", "-v", "tiktok", "login", "--paste"],
        cwd=REPO,
        env=os.environ.copy(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    authorize = os.environ["FEVERDREAM_TIKTOK_AUTHORIZE"]
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith(authorize):
            break
    else:
        pytest.fail(f"no authorization link printed: {printed} {process.stderr.read()}")
    address = redirected_address(line.strip())
    try:
        out, err = process.communicate(address + "\n", timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"login still waiting: {process.communicate()}")
    output = "".join(printed) + out + err
    assert process.returncode == 0, output
    assert "Logged in to TikTok as Fever Tester" in output
    assert_logged_in(fake)
    assert_nothing_secret(fake, output)


def test_paste_needs_a_fixed_port(fake: FakeTikTok, capsys: pytest.CaptureFixture):
    assert main(["tiktok", "login", "--paste", "--port", "0"]) == 1
    assert "fixed port" in capsys.readouterr().err
    assert fake.requests == []


def test_whoami_logged_out_names_the_token_file_and_how_to_log_in(
    fake: FakeTikTok, capsys: pytest.CaptureFixture
):
    assert main(["tiktok", "whoami"]) == 1
    err = capsys.readouterr().err
    assert str(token_path()) in err
    assert "feverdream tiktok login" in err and "--paste" in err


def test_missing_credentials_say_where_they_come_from(
    fake: FakeTikTok, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.delenv("TIKTOK_CLIENT_KEY")
    assert main(["tiktok", "login", "--paste"]) == 1
    err = capsys.readouterr().err
    assert "TIKTOK_CLIENT_KEY not set" in err and "Secrets panel" in err
    assert fake.requests == []

"""Logging in to TikTok, keeping the token fresh, and logging out, against the fake TikTok."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fake_tiktok import FakeTikTok

from pipeline.cli import main
from pipeline.tiktok.auth import Token, TokenStore
from pipeline.tiktok.config import Settings

REPO = Path(__file__).resolve().parents[1]


def token_path() -> Path:
    return Settings.from_env().token_path


def seed_login(fake: FakeTikTok) -> dict:
    """A saved login, as `tiktok login` leaves it, without the browser."""
    answer = fake.issue_tokens()
    TokenStore(token_path()).save(Token.from_response(answer))
    return answer


def start_login() -> tuple[subprocess.Popen, str]:
    """Run `feverdream tiktok login` as a user would and read the link it prints."""
    process = subprocess.Popen(
        # -v: the debug log must keep the secrets out too
        [sys.executable, "-m", "pipeline", "-v", "tiktok", "login", "--no-browser", "--port", "0"],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    authorize = os.environ["FEVERDREAM_TIKTOK_AUTHORIZE"]
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith(authorize):
            return process, line.strip()
    process.wait(timeout=10)
    pytest.fail(f"no authorization link printed: {printed} {process.stderr.read()}")


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"login still waiting: {out}{err}")
    return process.returncode, out + err


def assert_no_secret(fake: FakeTikTok, text: str) -> None:
    for secret in fake.secrets():
        assert secret and secret not in text


def test_login_follows_the_link_to_the_callback_and_saves_a_private_token(fake: FakeTikTok):
    process, url = start_login()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["scope"] == "user.info.basic,video.upload,video.publish"
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 64  # hex SHA-256, as TikTok's desktop flow wants
    assert query["redirect_uri"].startswith("http://127.0.0.1:")

    page = httpx.get(url, follow_redirects=True, timeout=10)  # the fake consents at once
    assert page.status_code == 200 and "Logged in" in page.text
    assert urlsplit(str(page.url)).path == "/callback/"

    status, output = finish(process)
    assert status == 0, output
    assert "Logged in to TikTok as Fever Tester" in output

    (exchange,) = fake.requests_to("/v2/oauth/token/")
    assert exchange.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert exchange.form["grant_type"] == "authorization_code"
    assert exchange.form["redirect_uri"] == query["redirect_uri"]
    verifier = exchange.form["code_verifier"]
    assert hashlib.sha256(verifier.encode()).hexdigest() == query["code_challenge"]

    path = token_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["access_token"] in fake.grants
    assert saved["refresh_token"] in fake.refresh_tokens
    assert_no_secret(fake, output)


def test_a_callback_with_another_state_is_refused_and_no_code_is_exchanged(fake: FakeTikTok):
    process, url = start_login()
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    forged = httpx.get(f"{redirect_uri}?code=stolen&state=not-the-one", timeout=10)
    assert forged.status_code == 400
    status, output = finish(process)
    assert status == 1
    assert "did not come from the login feverdream started" in output
    assert fake.requests_to("/v2/oauth/token/") == []
    assert not token_path().exists()


def test_a_denied_login_says_so(fake: FakeTikTok):
    fake.knobs.deny = True
    process, url = start_login()
    httpx.get(url, follow_redirects=True, timeout=10)
    status, output = finish(process)
    assert status == 1
    assert "access_denied" in output and "allow access" in output
    assert not token_path().exists()


def test_a_login_without_direct_posting_warns_and_direct_posts_are_refused(
    fake: FakeTikTok, tmp_path: Path, capsys
):
    fake.knobs.granted_scopes = ("user.info.basic", "video.upload")
    process, url = start_login()
    httpx.get(url, follow_redirects=True, timeout=10)
    status, output = finish(process)
    assert status == 0
    assert "video.publish" in output and "--direct" in output
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not read: the permission check comes first")
    assert main(["tiktok", "post", "--direct", "--privacy", "SELF_ONLY", str(video)]) == 1
    assert "video.publish permission" in capsys.readouterr().err
    assert fake.requests_to("/v2/post/publish/video/init/") == []


def test_missing_app_credentials_name_the_variables(fake, monkeypatch, capsys):
    monkeypatch.delenv("TIKTOK_CLIENT_SECRET")
    assert main(["tiktok", "login", "--no-browser", "--port", "0"]) == 1
    assert "TIKTOK_CLIENT_SECRET not set" in capsys.readouterr().err
    assert fake.requests == []


def test_whoami_and_logout_revoke_and_delete_the_token(fake: FakeTikTok, capsys):
    answer = seed_login(fake)
    assert main(["tiktok", "whoami"]) == 0
    assert "Fever Tester" in capsys.readouterr().out

    assert main(["tiktok", "logout"]) == 0
    (revoke,) = fake.requests_to("/v2/oauth/revoke/")
    assert revoke.form["token"] == answer["access_token"]
    assert fake.grants[answer["access_token"]].revoked
    assert not token_path().exists()

    assert main(["tiktok", "whoami"]) == 1
    assert "not logged in" in capsys.readouterr().err


def test_an_expired_token_is_refreshed_once_and_the_rotated_refresh_token_saved_first(
    fake: FakeTikTok, capsys
):
    first = seed_login(fake)
    on_disk_when_used: dict[str, str] = {}

    def note_saved_token(grant) -> None:
        saved = json.loads(token_path().read_text())
        on_disk_when_used.setdefault(saved["access_token"], saved["refresh_token"])

    fake.on_api_call = note_saved_token
    fake.expire_access_tokens()
    assert main(["tiktok", "whoami"]) == 0
    (refresh,) = fake.requests_to("/v2/oauth/token/")
    assert refresh.form["grant_type"] == "refresh_token"
    assert refresh.form["refresh_token"] == first["refresh_token"]
    second = json.loads(token_path().read_text())
    assert second["refresh_token"] != first["refresh_token"]
    # the new refresh token was on disk before the new access token was first used
    assert on_disk_when_used[second["access_token"]] == second["refresh_token"]
    assert stat.S_IMODE(token_path().stat().st_mode) == 0o600

    fake.expire_access_tokens()
    assert main(["tiktok", "whoami"]) == 0
    refreshes = [r.form["refresh_token"] for r in fake.requests_to("/v2/oauth/token/")]
    assert refreshes == [first["refresh_token"], second["refresh_token"]]
    assert_no_secret(fake, "".join(capsys.readouterr()))

    # and TikTok no longer takes the first one, which feverdream never offered again
    old = httpx.post(
        f"{fake.base_url}/v2/oauth/token/",
        data={
            "client_key": fake.client_key,
            "client_secret": fake.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
        },
    )
    assert old.json()["error"] == "invalid_grant"


def test_a_token_about_to_expire_is_refreshed_before_use(fake: FakeTikTok):
    fake.knobs.access_ttl = 60  # under the 5 minutes feverdream keeps in hand
    first = seed_login(fake)
    fake.knobs.access_ttl = 7200
    assert main(["tiktok", "whoami"]) == 0
    (refresh,) = fake.requests_to("/v2/oauth/token/")
    assert refresh.form["refresh_token"] == first["refresh_token"]
    (info,) = fake.requests_to("/v2/user/info/")
    assert info.headers["authorization"] != f"Bearer {first['access_token']}"


@pytest.mark.parametrize("error_status", [200, 400])
def test_a_refused_refresh_asks_to_log_in_again(fake: FakeTikTok, capsys, error_status: int):
    fake.knobs.oauth_error_status = error_status
    seed_login(fake)
    for record in fake.refresh_tokens.values():
        record.valid = False
    fake.expire_access_tokens()
    assert main(["tiktok", "whoami"]) == 1
    assert "feverdream tiktok login" in capsys.readouterr().err

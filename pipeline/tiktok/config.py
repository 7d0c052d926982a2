"""Where the poster talks to and keeps its token: endpoints, app credentials and paths from the
environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from pipeline.errors import FeverdreamError

DEFAULT_API = "https://open.tiktokapis.com"
DEFAULT_AUTHORIZE = "https://www.tiktok.com/v2/auth/authorize/"
TOKEN_FILE = "tiktok-token.json"

APP_HELP = (
    "Create an app at https://developers.tiktok.com (platform: Desktop, products: Login Kit "
    "and Content Posting API, redirect URI http://127.0.0.1:3455/callback/ or "
    "http://127.0.0.1:*/callback/) and use its Client key and Client secret"
)


@dataclass(frozen=True)
class Credentials:
    """The user's own TikTok app; the secret never leaves this object except in a token form."""

    client_key: str
    client_secret: str = field(repr=False)

    @classmethod
    def from_env(cls) -> Credentials:
        key = os.environ.get("TIKTOK_CLIENT_KEY", "").strip()
        secret = os.environ.get("TIKTOK_CLIENT_SECRET", "").strip()
        missing = [
            name
            for name, value in (("TIKTOK_CLIENT_KEY", key), ("TIKTOK_CLIENT_SECRET", secret))
            if not value
        ]
        if missing:
            raise FeverdreamError(
                f"{' and '.join(missing)} not set: feverdream reads your TikTok app's client key "
                "and secret from the environment variables TIKTOK_CLIENT_KEY and "
                "TIKTOK_CLIENT_SECRET (on Colab, add them in the Secrets panel, the key icon, "
                f"and let the notebook read them). No app yet? {APP_HELP}"
            )
        return cls(key, secret)


@dataclass(frozen=True)
class Settings:
    """Endpoints and the token's home; tests point the endpoints at a local fake TikTok."""

    api_base: str
    authorize_url: str
    home: Path

    @classmethod
    def from_env(cls) -> Settings:
        home = os.environ.get("FEVERDREAM_HOME") or platformdirs.user_config_dir("feverdream")
        return cls(
            api_base=os.environ.get("FEVERDREAM_TIKTOK_API", DEFAULT_API).rstrip("/"),
            authorize_url=os.environ.get("FEVERDREAM_TIKTOK_AUTHORIZE", DEFAULT_AUTHORIZE),
            home=Path(home),
        )

    @property
    def token_path(self) -> Path:
        return self.home / TOKEN_FILE

"""Posting a video with `feverdream tiktok post`, drafts and direct posts, against the fake
TikTok: the chunked upload, status polling, and every refusal a user can meet."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest
from fake_tiktok import FakeTikTok

from pipeline.cli import main
from pipeline.errors import FeverdreamError
from pipeline.tiktok import check_can_post, post_video

BIG_SIZE = 70_000_123  # over 64,000,000: seven chunks, the last taking the odd bytes
INBOX_INIT = "/v2/post/publish/inbox/video/init/"
DIRECT_INIT = "/v2/post/publish/video/init/"
CREATOR_INFO = "/v2/post/publish/creator_info/query/"
STATUS = "/v2/post/publish/status/fetch/"


def make_video(path: Path, fps: int) -> Path:
    """A real one-second 360x640 H.264 MP4, made with the bundled ffmpeg."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi",
            "-i", f"testsrc=size=360x640:rate={fps}:duration=1",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "anxiety.mp4", fps=24)


@pytest.fixture(scope="module")
def big_video(video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MP4 followed by zeros up to BIG_SIZE: still a video TikTok's checks pass."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    path.write_bytes(video.read_bytes())
    with path.open("r+b") as file:
        file.truncate(BIG_SIZE)
    return path


@pytest.fixture
def fake(logged_in_tiktok: FakeTikTok) -> FakeTikTok:
    """A fake TikTok and a saved login to it."""
    return logged_in_tiktok


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def only_task(fake: FakeTikTok):
    (task,) = fake.tasks.values()
    return task


def expected_ranges(size: int, chunk: int, count: int) -> list[str]:
    starts = [i * chunk for i in range(count)]
    ends = [s + chunk - 1 for s in starts[:-1]] + [size - 1]
    return [f"bytes {s}-{e}/{size}" for s, e in zip(starts, ends, strict=True)]


DIRECT = ["--direct", "--privacy", "SELF_ONLY", "--yes"]


# --- the happy paths ---------------------------------------------------------------------


def test_a_draft_goes_to_the_inbox_in_one_chunk(fake: FakeTikTok, video: Path, capsys):
    assert main(["tiktok", "post", str(video), "--caption", "what anxiety feels like"]) == 0
    out = capsys.readouterr().out
    task = only_task(fake)
    assert f"publish_id: {task.publish_id}" in out
    assert "status: SEND_TO_USER_INBOX" in out and "TikTok inbox" in out
    assert "paste it there: what anxiety feels like" in out  # drafts carry no caption

    (init,) = fake.requests_to(INBOX_INIT)
    size = video.stat().st_size
    assert init.json == {
        "source_info": {
            "source": "FILE_UPLOAD",
            "video_size": size,
            "chunk_size": size,
            "total_chunk_count": 1,
        }
    }
    assert task.ranges == [f"bytes 0-{size - 1}/{size}"]
    assert task.sha256.hexdigest() == sha256(video)
    assert fake.requests_to(CREATOR_INFO) == []


def test_a_direct_post_asks_creator_info_first_and_labels_the_video_ai_made(
    fake: FakeTikTok, video: Path, capsys
):
    args = ["tiktok", "post", str(video), *DIRECT, "--caption", "#vqganclip", "--cover-ms", "500"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Posting to TikTok as Fever Tester (@fevertester)" in out
    assert "comments: off (--allow-comment turns them on)" in out
    assert "duets:    off, and the account cannot allow them: it is private" in out
    assert "Music Usage Confirmation" in out
    assert "status: PUBLISH_COMPLETE" in out

    paths = [r.path for r in fake.requests if r.path.startswith("/v2/post/")]
    assert paths.index(CREATOR_INFO) < paths.index(DIRECT_INIT)
    (init,) = fake.requests_to(DIRECT_INIT)
    assert init.json["post_info"] == {
        "privacy_level": "SELF_ONLY",
        "title": "#vqganclip",
        "disable_comment": True,  # TikTok's rules: interactions start off
        "disable_duet": True,
        "disable_stitch": True,
        "brand_content_toggle": False,
        "brand_organic_toggle": False,
        "is_aigc": True,
        "video_cover_timestamp_ms": 500,
    }
    assert init.json["source_info"]["total_chunk_count"] == 1
    assert only_task(fake).sha256.hexdigest() == sha256(video)


@pytest.mark.parametrize("mode", [[], DIRECT], ids=["draft", "direct"])
def test_a_file_over_64_mb_goes_in_floor_sized_chunks_in_order(
    fake: FakeTikTok, big_video: Path, mode: list[str]
):
    assert main(["tiktok", "post", str(big_video), *mode]) == 0
    (init,) = fake.requests_to(DIRECT_INIT if mode else INBOX_INIT)
    assert init.json["source_info"] == {
        "source": "FILE_UPLOAD",
        "video_size": BIG_SIZE,
        "chunk_size": 10_000_000,
        "total_chunk_count": 7,  # floor(70,000,123 / 10,000,000): the last chunk takes the rest
    }
    task = only_task(fake)
    assert task.ranges == expected_ranges(BIG_SIZE, 10_000_000, 7)
    assert task.sha256.hexdigest() == sha256(big_video)


def test_a_chunk_tiktok_fails_on_is_sent_again(fake: FakeTikTok, big_video: Path, capsys):
    fake.knobs.chunk_errors = {2: [503, 502]}
    assert main(["tiktok", "post", str(big_video)]) == 0
    puts = [r.headers["content-range"] for r in fake.requests if r.method == "PUT"]
    third = expected_ranges(BIG_SIZE, 10_000_000, 7)[2]
    assert puts.count(third) == 3 and len(puts) == 9
    assert only_task(fake).sha256.hexdigest() == sha256(big_video)
    assert len(fake.requests_to(INBOX_INIT)) == 1


@pytest.mark.parametrize("status", [403, 404, 416])  # expired, unknown, out of step
def test_a_dropped_upload_starts_over_once_with_a_new_init(
    fake: FakeTikTok, video: Path, capsys, status: int
):
    fake.knobs.chunk_errors = {0: [status]}
    assert main(["tiktok", "post", str(video)]) == 0
    assert len(fake.requests_to(INBOX_INIT)) == 2
    assert f"upload_http_{status}); starting over" in capsys.readouterr().out


def test_an_upload_dropped_twice_gives_up_with_advice(fake: FakeTikTok, video: Path, capsys):
    fake.knobs.chunk_errors = {0: [403, 403]}
    assert main(["tiktok", "post", str(video)]) == 1
    assert "upload link expired" in capsys.readouterr().err
    assert len(fake.requests_to(INBOX_INIT)) == 2


def test_no_wait_returns_after_the_upload_and_status_tells_the_rest(
    fake: FakeTikTok, video: Path, capsys
):
    assert main(["tiktok", "post", str(video), "--no-wait"]) == 0
    assert fake.requests_to(STATUS) == []
    publish_id = only_task(fake).publish_id
    assert f"feverdream tiktok status {publish_id}" in capsys.readouterr().out
    assert main(["tiktok", "status", publish_id]) == 0
    assert f"{publish_id}: PROCESSING_UPLOAD" in capsys.readouterr().out


def test_an_access_token_expiring_mid_post_is_refreshed_and_the_post_finishes(
    fake: FakeTikTok, video: Path, capsys
):
    def expire_after_init(grant) -> None:
        if fake.requests_to(INBOX_INIT) and not fake.requests_to("/v2/oauth/token/"):
            fake.expire_access_tokens()

    fake.on_api_call = expire_after_init
    assert main(["tiktok", "post", str(video)]) == 0
    assert len(fake.requests_to("/v2/oauth/token/")) == 1
    assert "SEND_TO_USER_INBOX" in capsys.readouterr().out


def test_comments_duets_and_stitches_are_on_only_when_the_user_opts_in(
    fake: FakeTikTok, video: Path, capsys
):
    fake.knobs.audited = True
    fake.knobs.account_private = False  # so the account may allow duets and stitches
    public = ["--direct", "--privacy", "PUBLIC_TO_EVERYONE", "--yes"]
    assert main(["tiktok", "post", str(video), *public, "--allow-comment", "--allow-stitch"]) == 0
    assert main(["tiktok", "post", str(video), *public, "--allow-duet", "--no-comment"]) == 0
    first, second = (r.json["post_info"] for r in fake.requests_to(DIRECT_INIT))
    assert [first[f"disable_{x}"] for x in ("comment", "duet", "stitch")] == [False, True, False]
    assert [second[f"disable_{x}"] for x in ("comment", "duet", "stitch")] == [True, False, True]
    out = capsys.readouterr().out
    assert "comments: on" in out and "duets:    off (--allow-duet turns them on)" in out


# --- failures the user must understand ---------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "flag", "reason"),
    [
        ("comment_disabled", "--allow-comment", "Comments setting is No one"),
        ("account_private", "--allow-duet", "it is private"),
        ("stitch_disabled", "--allow-stitch", "Stitch setting is No one"),
    ],
)
def test_an_interaction_the_account_disables_cannot_be_allowed(
    fake: FakeTikTok, video: Path, capsys, knob: str, flag: str, reason: str
):
    fake.knobs.audited = knob != "account_private"
    fake.knobs.account_private = knob == "account_private"
    setattr(fake.knobs, knob, True)
    privacy = "SELF_ONLY" if fake.knobs.account_private else "PUBLIC_TO_EVERYONE"
    args = ["tiktok", "post", str(video), "--direct", "--privacy", privacy, "--yes", flag]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{flag}: Fever Tester's account cannot allow" in err and reason in err
    assert fake.requests_to(CREATOR_INFO) and fake.requests_to(DIRECT_INIT) == []


def test_allowing_and_forbidding_the_same_interaction_is_refused(
    fake: FakeTikTok, video: Path, capsys
):
    with pytest.raises(SystemExit) as exit_:
        main(["tiktok", "post", str(video), *DIRECT, "--allow-duet", "--no-duet"])
    assert exit_.value.code == 2
    assert "--no-duet: not allowed with argument --allow-duet" in capsys.readouterr().err
    assert fake.requests == []


def test_a_post_that_fails_after_upload_prints_the_reason_and_the_fix(
    fake: FakeTikTok, video: Path, capsys
):
    fake.knobs.fail_reason = "frame_rate_check_failed"
    assert main(["tiktok", "post", str(video), *DIRECT]) == 1
    err = capsys.readouterr().err
    assert "frame_rate_check_failed" in err and "constant frame rate" in err


def test_a_privacy_level_the_creator_does_not_offer_is_refused_before_init(
    fake: FakeTikTok, video: Path, capsys
):
    args = ["tiktok", "post", str(video), "--direct", "--privacy", "PUBLIC_TO_EVERYONE", "--yes"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "cannot post with privacy PUBLIC_TO_EVERYONE" in err
    assert "FOLLOWER_OF_CREATOR, MUTUAL_FOLLOW_FRIENDS, SELF_ONLY" in err
    assert fake.requests_to(DIRECT_INIT) == []


def test_a_direct_post_without_privacy_lists_the_choices_instead_of_defaulting(
    fake: FakeTikTok, video: Path, capsys
):
    assert main(["tiktok", "post", str(video), "--direct", "--yes"]) == 1
    assert "needs --privacy" in capsys.readouterr().err
    assert fake.requests_to(DIRECT_INIT) == []


def test_a_direct_post_with_no_terminal_to_confirm_on_is_refused(
    fake: FakeTikTok, video: Path, capsys
):
    assert main(["tiktok", "post", str(video), "--direct", "--privacy", "SELF_ONLY"]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert fake.requests_to(DIRECT_INIT) == []


def test_a_direct_post_goes_out_only_when_the_user_says_yes(fake: FakeTikTok, video: Path):
    questions: list[str] = []

    def answer(reply: bool):
        return lambda question: questions.append(question) or reply

    with pytest.raises(FeverdreamError, match="not posted"):
        post_video(video, mode="direct", privacy="SELF_ONLY", confirm=answer(False))
    assert fake.requests_to(DIRECT_INIT) == []
    result = post_video(video, mode="direct", privacy="SELF_ONLY", confirm=answer(True))
    assert result.status == "PUBLISH_COMPLETE" and len(questions) == 2


def test_a_caption_over_tiktoks_limit_is_refused_before_any_request(
    fake: FakeTikTok, video: Path, capsys
):
    caption = "😱" * 1101  # 2202 UTF-16 units: TikTok counts those, not characters
    assert main(["tiktok", "post", str(video), *DIRECT, "--caption", caption]) == 1
    assert "2202" in capsys.readouterr().err
    assert fake.requests == []


def test_an_unaudited_app_posting_to_a_public_account_is_told_to_go_private_or_draft(
    fake: FakeTikTok, video: Path, capsys
):
    fake.knobs.account_private = False
    assert main(["tiktok", "post", str(video), *DIRECT]) == 1
    err = capsys.readouterr().err
    assert "unaudited_client_can_only_post_to_private_accounts" in err
    assert "private" in err and "--draft" in err


@pytest.mark.parametrize("bare", [False, True], ids=["data-and-error", "error-only"])
def test_spam_refusals_sent_with_http_200_stop_the_post(
    fake: FakeTikTok, video: Path, capsys, bare: bool
):
    fake.knobs.creator_info_error = "spam_risk_too_many_posts"
    fake.knobs.bare_errors = bare
    assert main(["tiktok", "post", str(video), *DIRECT]) == 1
    err = capsys.readouterr().err
    assert "spam_risk_too_many_posts" in err and "24 hours" in err
    assert fake.requests_to(DIRECT_INIT) == []


def test_a_rate_limit_sent_with_http_200_is_an_error_not_a_success(
    fake: FakeTikTok, video: Path, capsys
):
    fake.knobs.rate_limits["inbox_init"] = 1
    fake.knobs.rate_limit_status = 200
    assert main(["tiktok", "post", str(video)]) == 0
    assert main(["tiktok", "post", str(video)]) == 1
    err = capsys.readouterr().err
    assert "rate_limit_exceeded" in err and "wait a minute" in err
    assert len(fake.tasks) == 1


def test_status_polling_rides_out_a_rate_limit(fake: FakeTikTok, video: Path, capsys):
    fake.knobs.rate_limits["status"] = 1
    fake.knobs.rate_window_s = 0.05
    assert main(["tiktok", "post", str(video)]) == 0
    assert "SEND_TO_USER_INBOX" in capsys.readouterr().out


def test_polls_and_resends_say_only_what_went_wrong(
    fake: FakeTikTok, big_video: Path, caplog: pytest.LogCaptureFixture
):
    # Polling is a loop of retries underneath (stamina): a post still processing is not a
    # warning, and a chunk sent again is said once, in our own words.
    fake.knobs.processing_polls = 3
    fake.knobs.chunk_errors = {1: [503]}
    caplog.set_level(logging.INFO)
    assert main(["tiktok", "post", str(big_video)]) == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.name.startswith("stamina")], caplog.text
    assert [r.getMessage() for r in warnings] == [
        "TikTok's upload server answered HTTP 503",
        "chunk 2/7: sending it again",
    ]


def test_a_20_fps_file_is_refused_before_any_request(fake: FakeTikTok, tmp_path: Path, capsys):
    slow = make_video(tmp_path / "slow.mp4", fps=20)
    assert main(["tiktok", "post", str(slow)]) == 1
    err = capsys.readouterr().err
    assert "nothing was sent" in err and "20 fps" in err
    assert fake.requests == []


@pytest.mark.parametrize(
    ("options", "env", "complaint"),
    [
        ({"mode": "direct", "yes": True}, {}, "needs --privacy"),
        ({"mode": "direct", "privacy": "SELF_ONLY"}, {}, "pass --yes"),
        ({"mode": "draft", "privacy": "SELF_ONLY"}, {}, "apply to --direct only"),
        ({"mode": "draft", "disable_comment": False}, {}, "apply to --direct only"),
        ({"mode": "draft", "disable_stitch": True}, {}, "apply to --direct only"),
        ({"mode": "draft"}, {"FEVERDREAM_HOME": "/nonexistent"}, "not logged in"),
        ({"mode": "draft"}, {"TIKTOK_CLIENT_SECRET": ""}, "TIKTOK_CLIENT_SECRET not set"),
    ],
)
def test_render_can_learn_before_rendering_that_the_post_would_be_refused(
    fake: FakeTikTok, monkeypatch, options: dict, env: dict, complaint: str
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FeverdreamError, match=complaint):
        check_can_post(**options)
    assert fake.requests == []


def test_render_may_post_when_the_check_passes(fake: FakeTikTok):
    check_can_post("direct", privacy="self_only", caption="#ok", yes=True)
    check_can_post("draft", caption="a caption is fine: the user pastes it in the app")


def test_no_secret_reaches_the_output_or_the_log(
    fake: FakeTikTok, video: Path, capsys, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    fake.expire_access_tokens()  # a refresh too, so new tokens pass through
    assert main(["-v", "tiktok", "post", str(video), *DIRECT]) == 0
    assert main(["-v", "tiktok", "whoami"]) == 0
    assert main(["-v", "tiktok", "logout"]) == 0
    shown = "".join(capsys.readouterr()) + caplog.text
    assert fake.secrets()
    for secret in fake.secrets():
        assert secret not in shown
    upload_tokens = [task.upload_token for task in fake.tasks.values()]
    assert not any(token in shown for token in upload_tokens)


def test_render_post_renders_then_posts_the_storyboards_caption_as_a_draft(
    fake: FakeTikTok, tiny_model_dir, tmp_path: Path, capsys
):
    board = tmp_path / "board.yaml"
    board.write_text(
        "size: 360x640\nduration: 1s\ncaption: 'what anxiety feels like #vqganclip'\n"
        "render:\n  size: 144x256\n  steps: 1\n  first_steps: 1\n  cuts: 2\n"
        "keyframes:\n  - at: 0s\n    prompt: a hallway\n"
    )
    out = tmp_path / "out"
    assert main(["render", str(board), "--models", "tiny", "-o", str(out), "--post"]) == 0
    task = only_task(fake)
    assert task.sha256.hexdigest() == sha256(out / "board.mp4")
    printed = capsys.readouterr().out
    assert "status: SEND_TO_USER_INBOX" in printed
    assert "what anxiety feels like #vqganclip" in printed  # for the user to paste in the app

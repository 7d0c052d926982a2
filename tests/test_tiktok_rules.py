"""TikTok's rules that need no server: the chunk plan TikTok accepts, and a message a user
understands for every error TikTok documents."""

from __future__ import annotations

import httpx
import pytest
from fake_tiktok import ApiError, Knobs, check_source
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tiktok.client import api_data
from pipeline.tiktok.errors import HINTS, TikTokError, explain
from pipeline.tiktok.upload import plan_chunks


@pytest.mark.parametrize(
    ("size", "chunk", "count"),
    [
        (4_194_304, 4_194_304, 1),  # TikTok's whole-file example
        (30_567_100, 30_567_100, 1),
        (64_000_000, 64_000_000, 1),  # the largest single chunk either reading of "MB" allows
        (64_000_001, 10_000_000, 6),
        (50_000_123, 50_000_123, 1),
        (158_008_374, 10_000_000, 15),
        (4 * 1024**3, 10_000_000, 429),
    ],
)
def test_the_chunk_plan_floors_and_sends_small_files_whole(size: int, chunk: int, count: int):
    plan = plan_chunks(size)
    assert (plan.chunk_size, plan.count) == (chunk, count)
    ranges = list(plan.ranges())
    assert ranges[0][0] == 0 and ranges[-1][1] == size - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))


@given(st.integers(min_value=1, max_value=4 * 1024**3))
def test_every_plan_passes_tiktoks_strict_chunk_rules(size: int):
    plan = plan_chunks(size)
    assert check_source(plan.source_info(), Knobs()) == (size, plan.chunk_size, plan.count)


def test_the_fake_refuses_what_real_tiktok_refuses():
    """So a passing plan means something: ceil, and one oversized chunk, both fail."""
    size = 70_000_123
    ceil = {"source": "FILE_UPLOAD", "video_size": size, "chunk_size": 10_000_000,
            "total_chunk_count": 8}  # fmt: skip
    one = {"source": "FILE_UPLOAD", "video_size": size, "chunk_size": size,
           "total_chunk_count": 1}  # fmt: skip
    with pytest.raises(ApiError, match="total chunk count"):
        check_source(ceil, Knobs())
    with pytest.raises(ApiError, match="chunk size"):
        check_source(one, Knobs())


DOCUMENTED_CODES = [
    # v2 envelope codes
    "access_token_invalid", "scope_not_authorized", "scope_permission_missed", "invalid_params",
    "invalid_param", "invalid_file_upload", "rate_limit_exceeded", "internal_error",
    "spam_risk_too_many_posts", "spam_risk_user_banned_from_posting", "reached_active_user_cap",
    "unaudited_client_can_only_post_to_private_accounts", "url_ownership_unverified",
    "privacy_level_option_mismatch", "spam_risk_too_many_pending_share", "invalid_publish_id",
    "token_not_authorized_for_specified_publish_id", "publish_not_cancellable",
    "app_version_check_failed",
    # OAuth errors
    "access_denied", "invalid_client", "invalid_grant", "invalid_request", "invalid_scope",
    "unauthorized_client", "unsupported_grant_type", "unsupported_response_type",
    "server_error", "temporarily_unavailable",
    # status fail_reasons
    "file_format_check_failed", "duration_check_failed", "frame_rate_check_failed",
    "picture_size_check_failed", "internal", "video_pull_failed", "photo_pull_failed",
    "publish_cancelled", "auth_removed", "spam_risk_text", "spam_risk",
    # upload PUT statuses
    "upload_http_400", "upload_http_403", "upload_http_404", "upload_http_416",
    "upload_http_500", "upload_http_502",
]  # fmt: skip


@pytest.mark.parametrize("code", DOCUMENTED_CODES)
def test_every_documented_error_has_its_own_advice(code: str):
    assert explain(code) in HINTS.values()


def test_the_unaudited_refusal_says_go_private_or_use_a_draft():
    advice = explain("unaudited_client_can_only_post_to_private_accounts")
    assert "private" in advice and "audited" in advice and "--draft" in advice


@pytest.mark.parametrize("status", [200, 403])
@pytest.mark.parametrize("with_data", [True, False])
def test_the_error_code_is_read_from_the_body_whatever_the_status(status: int, with_data: bool):
    body = {"error": {"code": "spam_risk_too_many_posts", "message": "m", "log_id": "L1"}}
    if with_data:
        body["data"] = {}
    with pytest.raises(TikTokError) as caught:
        api_data(httpx.Response(status, json=body))
    error = caught.value
    assert (error.code, error.message, error.log_id) == ("spam_risk_too_many_posts", "m", "L1")
    assert "log_id L1" in str(error)


def test_an_ok_body_gives_its_data():
    body = {"data": {"publish_id": "p"}, "error": {"code": "ok", "message": "", "log_id": "x"}}
    assert api_data(httpx.Response(200, json=body)) == {"publish_id": "p"}

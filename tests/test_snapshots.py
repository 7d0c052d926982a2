"""Each example storyboard's plan, frame by frame, matches its checked-in snapshot.

After an intended change to the plan, regenerate the snapshots with
`UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_snapshots.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.cli import load_plan

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).parent / "snapshots"
EXAMPLES = sorted((REPO / "storyboards").glob("*.yaml"))


@pytest.mark.parametrize("storyboard", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_plan_matches_snapshot(storyboard: Path):
    _, _, plan = load_plan(str(storyboard))
    got = json.dumps(plan.to_json(), indent=1, ensure_ascii=False) + "\n"
    snapshot = SNAPSHOTS / f"{storyboard.stem}.plan.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(got)
    assert snapshot.exists(), f"no snapshot for {storyboard.name}: run with UPDATE_SNAPSHOTS=1"
    assert got == snapshot.read_text(), f"{storyboard.name}'s plan differs from {snapshot}"


def test_every_example_uses_the_soundtrack():
    for storyboard in EXAMPLES:
        board, features, plan = load_plan(str(storyboard))
        assert features is not None and board.uses_audio_features
        assert any(kf.at.beat for kf in board.keyframes), storyboard.name
        assert 10 <= plan.duration <= 20 and board.fps in (24, 30)
        assert (board.width, board.height) == (1080, 1920)

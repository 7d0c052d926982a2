"""Each example storyboard's plan, frame by frame, matches its checked-in snapshot.

After an intended change to the plan, regenerate the snapshots with
`UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_snapshots.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.run import load as load_story

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).parent / "snapshots"
EXAMPLES = sorted((REPO / "storyboards").glob("*.yaml"))


@pytest.mark.parametrize("storyboard", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_plan_matches_snapshot(storyboard: Path):
    _, _, plan = load_story(str(storyboard))
    got = json.dumps(plan.to_json(), indent=1, ensure_ascii=False) + "\n"
    snapshot = SNAPSHOTS / f"{storyboard.stem}.plan.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(got)
    assert snapshot.exists(), f"no snapshot for {storyboard.name}: run with UPDATE_SNAPSHOTS=1"
    where = first_difference(json.loads(got), json.loads(snapshot.read_text()))
    assert where is None, f"{storyboard.name}'s plan differs from {snapshot} at {where}"


# The plan's numbers are written to 6 decimals; the audio features under them come out
# different in the last bits on another CPU (an AVX-512 Xeon wrote -0.413618 where the AVX2
# EPYC that wrote the snapshots had -0.41362; 7 of adhd's numbers, by up to 2e-6), so numbers
# may differ by a few units of the last decimal.
TOLERANCE = 5e-6


def first_difference(got, want, where: str = "") -> str | None:
    """Where two JSON values first differ (numbers by more than TOLERANCE), or None."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (got, want)):
        same = abs(got - want) <= TOLERANCE
        return None if same else f"{where or '.'}: {got!r} != {want!r}"
    if type(got) is not type(want):
        return f"{where or '.'}: {got!r} != {want!r}"
    if isinstance(got, dict):
        if got.keys() != want.keys():
            return f"{where or '.'}: keys {sorted(got)} != {sorted(want)}"
        pairs = [(f"{where}.{key}", got[key], want[key]) for key in got]
    elif isinstance(got, list):
        if len(got) != len(want):
            return f"{where or '.'}: {len(got)} items != {len(want)}"
        pairs = [(f"{where}[{i}]", a, b) for i, (a, b) in enumerate(zip(got, want, strict=True))]
    else:
        return None if got == want else f"{where or '.'}: {got!r} != {want!r}"
    for path, a, b in pairs:
        found = first_difference(a, b, path)
        if found:
            return found
    return None


def test_a_changed_plan_number_is_caught():
    # The tolerance forgives the last decimal's rounding, not a change to the plan.
    plan = [{"frame": 3, "zoom": 1.0125, "prompts": [["a", 0.5]]}]
    assert first_difference(plan, json.loads(json.dumps(plan))) is None
    nudged = [{"frame": 3, "zoom": 1.012502, "prompts": [["a", 0.5]]}]
    assert first_difference(nudged, plan) is None
    changed = [{"frame": 3, "zoom": 1.0126, "prompts": [["a", 0.5]]}]
    assert first_difference(changed, plan) == "[0].zoom: 1.0126 != 1.0125"
    assert first_difference([{**plan[0], "frame": 4}], plan) == "[0].frame: 4 != 3"
    renamed = [{"frame": 3, "zoom": 1.0125, "prompts": [["b", 0.5]]}]
    assert first_difference(renamed, plan) == "[0].prompts[0][0]: 'b' != 'a'"
    assert first_difference([True], [1]) == "[0]: True != 1"


def test_every_example_uses_the_soundtrack():
    for storyboard in EXAMPLES:
        board, features, plan = load_story(str(storyboard))
        assert features is not None and board.uses_audio_features
        assert any(kf.at.beat for kf in board.keyframes), storyboard.name
        assert 10 <= plan.duration <= 20 and board.fps in (24, 30)
        assert (board.width, board.height) == (1080, 1920)

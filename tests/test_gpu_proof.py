"""bench/gpu_proof.py, the GPU's one prepared run (issue 35), end to end at its tiny size on
this machine's CPU, so that it is known to work before a GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline import rendering

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_proof_runs_every_part_and_says_what_each_needs_a_gpu_for(tmp_path, tiny_model_dir):
    done = subprocess.run(
        [sys.executable, "bench/gpu_proof.py", "--tiny", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "gpu_proof.txt").read_text()
    figures = json.loads((tmp_path / "gpu_proof.json").read_text())
    parts = figures["parts"]
    assert list(parts) == ["tests", "render", "bench", "memory", "compile", "camera3d"]
    for name, part in parts.items():
        assert "failed" not in part and "skipped" not in part, (name, part)
    assert report.count("on a GPU this part shows") == 6
    # The tests part ran the marked tests on the device asked for, and they passed.
    assert parts["tests"]["exit"] == 0 and parts["tests"]["passed"] >= 1
    assert "--device-under-test cpu" in report
    # A real render each way, timed, its video one TikTok accepts.
    for encode in ("during", "after"):
        assert parts["render"][encode]["accepted"] and parts["render"][encode]["seconds"] > 0
    # The bench compared both engines, memory measured each canvas beside its estimate,
    # and compilation was timed against the plain step.
    assert parts["bench"]["64x112"]["ratio"] > 0
    assert [row["size"] for row in parts["memory"]["rows"]] == ["64x112"]
    assert all(row["estimate_gib"] > 0 for row in parts["memory"]["rows"])
    assert parts["compile"]["plain_step"] > 0 and parts["compile"]["compiled_first"] > 0
    assert f"renders of {rendering.COMPILE_MIN_STEPS} steps or more" in report
    # The 3D camera's depth model was timed, its share of a frame said.
    assert parts["camera3d"]["timings"]["depth"] > 0 and 0 < parts["camera3d"]["depth_share"] < 1
    assert "of a frame's time" in report

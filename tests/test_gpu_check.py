"""scripts/gpu_check.sh: without a GPU it says so in one line and exits 0; its steps' summary is well formed.

The GPU steps themselves run only on a GPU machine (the script's header says how); no test needs a GPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _steps_source() -> str:
    """The Python program the script writes to a temporary file (between <<'PY' and PY)."""
    m = re.search(r"<<'PY'\n(.*?)\nPY\n", SCRIPT.read_text(), re.S)
    assert m, "gpu_check.sh: no embedded steps program"
    return m.group(1)


def test_without_gpu_one_line_and_exit_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GNNPIPE_PYTHON": sys.executable}
    env.pop("GNNPIPE_GPU_CHECK_DEVICE", None)
    r = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [
        "gpu_check: no usable GPU here (torch.cuda.is_available() is False); nothing to check"
    ]
    assert not (tmp_path / "out").exists()


def test_script_syntax_and_embedded_program_compile():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    compile(_steps_source(), "gpu_check_steps.py", "exec")


@pytest.mark.parametrize("engine_ok", [True, False])
def test_summary_collects_steps(tmp_path, engine_ok):
    steps = tmp_path / "steps.py"
    steps.write_text(_steps_source())
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "info.json").write_text(json.dumps({"status": "ok", "device": "Fake GPU", "torch": "x"}))
    (out / "logs" / "tests.json").write_text(json.dumps({"status": "ok"}))
    (out / "logs" / "bench.json").write_text(json.dumps({"status": "ok", "ratio": 0.5}))
    if engine_ok:
        (out / "logs" / "engine.json").write_text(json.dumps({"status": "ok"}))
    env = {**os.environ, "GNNPIPE_ROOT": str(REPO)}
    r = subprocess.run(
        [sys.executable, str(steps), "summary", str(out), "12"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == (0 if engine_ok else 1), r.stderr
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["device"] == "Fake GPU" and doc["total_s"] == 12
    assert set(doc["steps"]) == {"info", "tests", "bench", "engine"}
    assert "ours/PyG = 0.50" in r.stdout
    if not engine_ok:
        assert doc["steps"]["engine"]["status"].startswith("not run")

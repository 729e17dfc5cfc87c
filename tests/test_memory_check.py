"""benchmarks/memory_check.py (issue 22, item 5) runs its whole path on the CPU with the tiny
networks, so the GPU session that measures with it spends no minutes on a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 16 s on 2 cores: the full suite runs it, the quick loop does not
def test_the_memory_check_runs_on_the_cpu_with_the_tiny_networks(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_check.py"), "--device", "cpu", "--tiny",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "memory_check.json").read_text())
    assert set(report["workloads"]) == {"lr192x352", "lr270x480"}
    for r in report["workloads"].values():
        assert r["predicted_peak_gib"] > 0 and r["measured_peak_gib"] is None  # nothing to measure on a CPU
        assert r["shapes"]["unet"][0] == 2 and r["shapes"]["decode"][2] == 3  # the default path
        assert r["two_windows"]["shape"][0] == 4 and r["two_windows"]["predicted_denoise_gib"] > 0
        assert r["saving_vs_batched"]["bitwise"] is True  # the CPU: uav.models.batching's forms, same numbers
    sim = report["simulated"]
    assert sim["fits"] is True and sim["predicted_peak_gib"] <= 0.9 * sim["card_gib"] and sim["changed"]
    assert "Memory model check" in (tmp_path / "memory_check.md").read_text()

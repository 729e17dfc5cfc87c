"""Write errors end in one line, never a traceback (issue #23 item 11): stdout on a full
device (``--json > /dev/full``, the variable-frame-rate error included), and an output
folder made read-only mid-write, whose temporary cannot be removed: the line names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from io_helpers import make_clip  # noqa: E402

UAV = [sys.executable, "-c", "import sys; from uav.cli import main; sys.argv[0] = 'uav'; main()"]


def _to_full_device(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open("/dev/full", "w") as full:
        return subprocess.run([*UAV, *args], stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    make_clip(path, num_frames=12, timestamps=[0, 1, 2, 3, 5, 6, 8, 9, 10, 12, 13, 14], time_base=Fraction(1, 24))
    return path


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
# each case starts the CLI (6-9 s on 2 cores): the quick loop runs two of them, the full suite all
@pytest.mark.parametrize("case", [pytest.param("plugins", marks=pytest.mark.slow), "missing input",
                                  pytest.param("vfr input", marks=pytest.mark.slow),
                                  pytest.param("weights", marks=pytest.mark.slow), "usage error"])
def test_json_to_a_full_device_is_one_line(case, vfr_clip, tmp_path):
    args = {
        "plugins": ["plugins", "--json"],
        "missing input": ["upscale", str(tmp_path / "nope.mp4"), "--self-check", "--json"],
        "vfr input": ["upscale", str(vfr_clip), "--self-check", "--json", "--steps", "1"],
        "weights": ["weights", "--json"],
        "usage error": ["upscale", str(vfr_clip), "--bogus", "--json"],
    }[case]
    res = _to_full_device(*args)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    if case == "vfr input":
        assert "variable frame rate" in lines[0] and "ffmpeg -i vfr.mp4 -fps_mode cfr -r 24" in lines[0]
        assert "vfr='cfr'" not in lines[0]  # the API's argument means nothing on the command line
    if case in ("plugins", "weights"):
        assert lines == ["error: cannot write to standard output (No space left on device); the command's output "
                         "was lost"]


_READ_ONLY_MID_WRITE = textwrap.dedent('''
    import subprocess, sys
    import numpy as np
    from uav.io import VideoWriter, VideoOutputError
    folder = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", folder], check=True)
    writer = VideoWriter(folder + "/shot", fps=24, width=16, height=12, codec="png")
    writer.write(np.zeros((12, 16, 3), np.uint8))
    writer.write(np.zeros((12, 16, 3), np.uint8))
    subprocess.run(["mount", "-o", "remount,ro", folder], check=True)  # the folder goes read-only mid-write
    try:
        writer.write(np.zeros((12, 16, 3), np.uint8))
    except VideoOutputError as exc:
        print("ERROR", exc)
    import os
    print("LEFT", sorted(os.listdir(folder)))
''')


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root")
def test_a_temporary_that_cannot_be_removed_is_named(tmp_path):
    folder = tmp_path / "mnt"
    folder.mkdir()
    res = subprocess.run(["unshare", "-m", sys.executable, "-c", _READ_ONLY_MID_WRITE, str(folder)],
                         capture_output=True, text=True, timeout=120)
    if "mount" in res.stderr and ("permission denied" in res.stderr.lower() or "not permitted" in res.stderr):
        pytest.skip("mounting is not allowed here")
    assert res.returncode == 0, res.stderr
    out = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    [left] = eval(out["LEFT"])  # noqa: S307 - our own script's repr of a list of names
    assert left.startswith(".shot.uavtmp-")
    message = out["ERROR"]
    assert "\n" not in message and "nothing was saved" in message
    assert f"but its temporary {folder}/{left} could not be removed (read-only file system)" in message
    assert "delete it once the folder is writable again" in message

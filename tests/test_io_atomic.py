"""Atomic outputs under failure: stale temporaries of killed runs, SIGTERM/SIGINT, a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from uav.io import VideoOutputError, VideoWriter, atomic_output, clean_stale_temporaries, probe, write_video
from uav.io import atomic

FRAME = np.zeros((16, 16, 3), np.uint8)

_WRITE_AND_WAIT = """
import signal, sys, time
import numpy as np
from uav.io import VideoWriter
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if the test runner ignores it
writer = VideoWriter(sys.argv[1], fps=24, width=16, height=16, codec=sys.argv[2])
writer.write(np.zeros((16, 16, 3), np.uint8))
print("ready", flush=True)
time.sleep(60)
"""


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _start_writer(out: Path, codec: str = "h264") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _WRITE_AND_WAIT, str(out), codec], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_temporary_names_say_whose_they_are(tmp_path: Path) -> None:
    name = atomic.temporary_path(tmp_path / "clip_4x.mp4").name
    assert name.startswith(f".clip_4x{atomic.TEMP_MARK}-{os.getpid()}-") and name.endswith(".mp4")
    assert atomic.temporary_path(tmp_path / "frames", folder=True).name.startswith(".frames.uavtmp-")


def test_killed_run_leftover_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    proc = _start_writer(tmp_path / "out.mp4")
    proc.kill()  # SIGKILL: no handler runs, the temporary stays (the 0-byte hidden file)
    proc.wait()
    (leftover,) = _hidden(tmp_path)
    assert f"{atomic.TEMP_MARK}-{proc.pid}-" in leftover
    write_video(tmp_path / "other.mp4", [FRAME], fps=24)  # any output in that folder cleans up
    assert _hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["other.mp4"]


def test_only_stale_temporaries_of_our_own_naming_are_removed(tmp_path: Path) -> None:
    host = atomic._HOST
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".a.uavtmp-{dead}-{host}-0123abcd.mp4"
    stale_seq = tmp_path / f".frames.uavtmp-{dead}-{host}-89abcdef"
    running = tmp_path / f".b.uavtmp-{alive}-{host}-0123abcd.mp4"
    mine = atomic.temporary_path(tmp_path / "c.mp4")
    other_host = tmp_path / f".d.uavtmp-{dead}-ffffff-0123abcd.mp4"
    legacy_old = tmp_path / ".e.uavtmp-0123abcd.mp4"
    legacy_new = tmp_path / ".f.uavtmp-4567cdef.mp4"
    not_ours = [tmp_path / ".g.uavtmp.mp4", tmp_path / f".h.uavtmp-{dead}.mp4", tmp_path / "i.uavtmp-1-abcdef-01234567",
                tmp_path / ".bashrc"]
    for p in [stale, running, mine, other_host, legacy_old, legacy_new, *not_ours]:
        p.write_bytes(b"")
    stale_seq.mkdir()
    (stale_seq / "000000.png").write_bytes(b"x")
    day_ago = time.time() - 2 * atomic.FOREIGN_STALE_SECONDS
    os.utime(legacy_old, (day_ago, day_ago))
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale.name, stale_seq.name, legacy_old.name])
    for p in [running, mine, other_host, legacy_new, *not_ours]:
        assert p.exists(), p.name
    os.utime(other_host, (day_ago, day_ago))  # untouched for a day: no process will finish it
    assert clean_stale_temporaries(tmp_path) == [other_host]


@pytest.mark.parametrize(("sig", "codec"), [(signal.SIGTERM, "h264"), (signal.SIGTERM, "png"), (signal.SIGINT, "h264")])
def test_a_signal_removes_the_temporary(tmp_path: Path, sig: signal.Signals, codec: str) -> None:
    out = tmp_path / ("out.mp4" if codec == "h264" else "frames")
    proc = _start_writer(out, codec)
    assert len(_hidden(tmp_path)) == 1
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # still dies of the signal, as without the handler
    assert list(tmp_path.iterdir()) == []


class _FullDisk:
    """Stands in for the writer's PyAV container; muxing fails once ``allowed`` packets are written."""

    def __init__(self, container: object, allowed: int, error: OSError) -> None:
        self._container, self._allowed, self._error = container, allowed, error

    def mux(self, packet: object) -> None:
        if self._allowed <= 0:
            raise self._error
        self._allowed -= 1
        self._container.mux(packet)

    def __getattr__(self, name: str) -> object:
        return getattr(self._container, name)


def test_disk_full_mid_write_is_one_clear_error_and_no_partial_output(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"the previous render")
    writer = VideoWriter(target, fps=24, width=16, height=16, preset="ultrafast")
    writer._container = _FullDisk(writer._container, 1, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(VideoOutputError) as info:
        for _ in range(200):
            writer.write(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
        writer.close()
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(target))
    assert "no space left on device" in message and "nothing was saved" in message
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert target.read_bytes() == b"the previous render" and _hidden(tmp_path) == []


def test_disk_full_while_finishing_is_the_same_error(tmp_path: Path) -> None:
    import av

    writer = VideoWriter(tmp_path / "out.mov", fps=24, width=16, height=16)
    writer.write(FRAME)  # x264 holds it back (lookahead): its packet is muxed while closing
    writer._container = _FullDisk(writer._container, 0, av.error.OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(VideoOutputError, match="no space left"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_a_full_disk_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from uav.cli.common import handle_errors

    with pytest.raises(typer.Exit) as info:
        with handle_errors():
            writer = VideoWriter(tmp_path / "o.mp4", fps=24, width=16, height=16, preset="ultrafast")
            writer._container = _FullDisk(writer._container, 0, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
            for _ in range(100):
                writer.write(FRAME)
            writer.close()
    assert info.value.exit_code == 2 and list(tmp_path.iterdir()) == []
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {tmp_path / 'o.mp4'}: cannot be written (no space left on device); nothing was saved"


def test_atomic_output_for_other_writers(tmp_path: Path) -> None:
    target = tmp_path / "x.mov"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mov" and atomic.TEMP_MARK in tmp.name
        write_video(tmp, [FRAME], fps=24, codec="prores_hq")
    assert probe(target).num_frames == 1 and _hidden(tmp_path) == []
    with pytest.raises(RuntimeError, match="nothing was written"):
        with atomic_output(tmp_path / "y.mov"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mov"]

"""Issue 21 item 4: host work on worker threads with bounded queues (uav.overlap) and non-blocking copies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from uav.overlap import Background, Consumer, Deferred
from uav.sampling.transfer import Transfers


def test_background_keeps_order_and_bounds_what_waits():
    produced: list[int] = []
    in_flight: list[int] = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    with Background(source(), maxsize=3) as items:
        got = []
        for item in items:
            time.sleep(0.001)
            # produced but not yet consumed: the queue (3), the item being put, this one
            in_flight.append(len(produced) - len(got))
            got.append(item)
    assert got == list(range(50))
    assert max(in_flight) <= 3 + 2


def test_background_raises_the_producers_exception():
    def source():
        yield 1
        raise OSError("cannot decode frame 2 of in.mp4")

    items = Background(source())
    assert next(items) == 1
    with pytest.raises(OSError, match="cannot decode frame 2 of in.mp4"):
        next(items)
    items.close()


def test_background_stops_when_the_consumer_does():
    made = []

    def source():
        for i in range(10_000):
            made.append(i)
            yield i

    with Background(source(), maxsize=2) as items:
        next(items)
    time.sleep(0.1)
    assert len(made) <= 5  # the worker stopped instead of running through the source


def test_consumer_keeps_order_bounds_the_queue_and_raises_the_workers_exception():
    seen: list[int] = []
    gate = threading.Event()

    def work(i: int) -> None:
        gate.wait()
        seen.append(i)

    sink: Consumer[int] = Consumer(work, maxsize=2)
    sink.submit(0)
    sink.submit(1)
    sink.submit(2)  # the worker holds 0; 1 and 2 wait
    blocked = threading.Thread(target=sink.submit, args=(3,))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive()  # a full queue blocks the producer: memory stays bounded
    gate.set()
    blocked.join()
    sink.close()
    assert seen == [0, 1, 2, 3]

    def broken(i: int) -> None:
        if i == 1:
            raise RuntimeError("encoder: disk full")

    sink = Consumer(broken)
    sink.submit(0)
    sink.submit(1)
    with pytest.raises(RuntimeError, match="disk full"):
        for i in range(2, 100):
            sink.submit(i)
            time.sleep(0.01)
        sink.close()


def test_deferred_returns_or_raises():
    assert Deferred(lambda: 41 + 1).result() == 42
    d = Deferred(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        d.result()
    assert d.failed()


def test_transfers_on_the_cpu_are_no_ops():
    xfer = Transfers(torch.device("cpu"))
    x = torch.randn(3, 4)
    assert xfer.to_device(x) is x
    out, none = xfer.to_host(x, None).wait()
    assert out is x and none is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_transfers_use_pinned_memory_and_events():
    xfer = Transfers(torch.device("cuda"))
    x = torch.randn(64, 64)
    dev = xfer.to_device(x, torch.float16)
    pending = xfer.to_host(dev * 2)
    assert pending.event is not None and pending.tensors[0].is_pinned()
    host, = pending.wait()
    assert torch.allclose(host.float(), (x.half() * 2).float())


# ---------------------------------------------------------------------------- through the upscaler
@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    from uav import VideoUpscaler
    from uav.weights import make_tiny_release

    release = make_tiny_release(tmp_path_factory.mktemp("w") / "tiny")
    return VideoUpscaler.from_pretrained(release, vae="video", device="cpu")


def clip(frames: int = 4) -> np.ndarray:
    return (np.random.RandomState(0).rand(frames, 8, 8, 3) * 255).astype(np.uint8)


def test_a_failing_flow_worker_stops_the_run_with_its_message(upscaler):
    class Broken:
        def __call__(self, frames, size):
            raise RuntimeError("flow estimator exploded")

    steps: list[int] = []
    own, upscaler.flow = upscaler.flow, Broken()  # what flow="auto" uses
    try:
        with pytest.raises(RuntimeError, match="flow estimator exploded"):
            upscaler.upscale(clip(), prompt="a", num_inference_steps=4, propagation_steps=(3,), seed=0,
                             callback=lambda e: steps.append(e["index"]) if e["stage"] == "denoise" else 0)
    finally:
        upscaler.flow = own
    assert len(steps) < 4  # stopped at the first step after the failure, not at propagation


def test_a_failing_encoder_stops_the_run_and_leaves_no_file(upscaler, tmp_path, monkeypatch):
    from uav.io import writer as writer_mod

    def broken(self, frame):
        raise OSError("encoder: disk full")

    monkeypatch.setattr(writer_mod.VideoWriter, "write", broken)
    out = tmp_path / "out.mp4"
    with pytest.raises(OSError, match="disk full"):
        upscaler.upscale(clip(), output=out, prompt="a", num_inference_steps=1, seed=0)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_written_frames_keep_their_order(upscaler, tmp_path):
    from uav.io.reader import read_frames

    frames = clip(7)
    kw = dict(prompt="a", num_inference_steps=1, seed=0)
    out = upscaler.upscale(frames, output=tmp_path / "seq", writer_options={"codec": "png"}, **kw)
    decoded = read_frames(Path(out))  # lossless: the frames as written, decoded by another reader
    direct = upscaler.upscale(frames, **kw)
    assert decoded.shape == direct.shape and np.array_equal(decoded, direct)

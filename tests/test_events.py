"""One event type (uav.events.Event) for the API callback, the executors and the timeline
integration, readable as the dict events it replaced."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

from uav import VideoUpscaler
from uav.events import Event
from uav.executors import Job, LocalExecutor
from uav.executors.progress import RunProgress
from uav.executors.simulate import SimulatedRenderer
from uav.weights import make_tiny_release, moving_pattern

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import upscale_timeline  # noqa: E402


def test_an_event_reads_as_the_dict_it_replaced() -> None:
    latents = torch.zeros(1)
    e = Event.of("denoise", 2, 5, timestep=981, latents=latents)
    assert e["stage"] == "denoise" and e["index"] == 2 and e["total"] == 5 and e["timestep"] == 981
    assert e.get("x0") is None and e.get("tile", 0) == 0 and "job" not in e
    assert e.timestep == 981 and e.stage == "denoise"
    assert {**e} == {"stage": "denoise", "index": 2, "total": 5, "timestep": 981, "latents": latents}
    assert e == {"stage": "denoise", "index": 2, "total": 5, "timestep": 981, "latents": latents}
    assert e.with_fields(tile=1)["tile"] == 1 and "tile" not in e  # frozen: a new event
    with pytest.raises(AttributeError):
        e.caption  # noqa: B018
    with pytest.raises(KeyError):
        e["caption"]
    with pytest.raises(Exception):
        e.stage = "decode"  # type: ignore[misc]
    job = Event.of("progress", 3, 10, "j1", worker="w1")
    assert job["job"] == "j1" and (job.kind, job.done, job.worker) == ("progress", 3, "w1")


def test_the_upscaler_callback_gets_events(tmp_path: Path) -> None:
    release = make_tiny_release(tmp_path / "upscale_a_video", fmt="bin")
    up = VideoUpscaler.from_pretrained(release, vae="video", load_text_encoder=False)
    events: list[Event] = []
    text = torch.zeros(1, 77, 32)
    up.upscale(moving_pattern(frames=3, height=8, width=8), num_inference_steps=1, seed=0, guidance_scale=1.0,
               prompt_embeds=text, callback=events.append)
    assert events and all(type(e) is Event for e in events)
    assert [e.stage for e in events if e.stage in ("denoise", "decode")] == ["denoise", "decode"]
    assert events[-1]["frames"] == 3


def test_executor_events_and_results_are_events(tmp_path: Path) -> None:
    jobs = [Job(name=f"j{k}", source="", output=tmp_path / f"j{k}.npy", frames=n) for k, n in enumerate((4, 2))]
    events: list[Event] = []
    results = list(LocalExecutor().run(jobs, functools.partial(SimulatedRenderer, 0.0), on_event=events.append))
    assert all(type(e) is Event for e in events) and len(results) == 2
    assert [e.stage for e in events][:3] == ["queued", "queued", "worker"]
    progress = [e for e in events if e.stage == "progress"]
    assert progress[-1].job.name == "j1" and progress[-1]["index"] == progress[-1].done == 2
    assert all(e["worker"] == "local" for e in events)


def test_run_progress_takes_result_events(tmp_path: Path) -> None:
    from uav.executors.base import result_event

    jobs = [Job(name="a", source="", output=tmp_path / "a.npy", frames=3)]
    with RunProgress(None, jobs=1, frames=3) as view:
        for r in LocalExecutor().run(jobs, functools.partial(SimulatedRenderer, 0.0), on_event=view):
            view(result_event(r))
        view(Event.of("rendered", job=object()))  # a timeline job's state, as uav timeline's on_event sends it
    assert view.summary()["done"] == 1 and view.workers == {"local": "idle"}


def test_the_timeline_integration_reports_events(tmp_path: Path) -> None:
    media = F.media_set(tmp_path / "media_in")
    src = tmp_path / "cut.otio"
    import opentimelineio as otio

    otio.adapters.write_to_file(F.GOLDEN[sorted(F.GOLDEN)[0]](media), str(src))
    events: list[Event] = []
    states: list[str] = []
    upscale_timeline(src, tmp_path / "out.otio", tmp_path / "media", renderer=F.SpyRenderer(),
                     on_event=events.append, on_job=lambda job, state: states.append(state))
    assert events and all(type(e) is Event for e in events)
    assert [e.stage for e in events if e.stage != "progress"] == states and "rendered" in states

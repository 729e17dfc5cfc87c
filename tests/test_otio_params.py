"""The timeline API's parameter objects stand for their keywords (uav_otio.params)."""

from __future__ import annotations

import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import plan_file  # noqa: E402
from uav_otio.api import Planning, Reading, Rendering, preview_timeline, upscale_timeline  # noqa: E402


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("params")
    src = folder / "cut.otio"
    otio.adapters.write_to_file(F.GOLDEN[sorted(F.GOLDEN)[0]](F.media_set(folder / "media")), str(src))
    return src


def _ranges(plan) -> list[tuple[str, int, int]]:
    return [(j.output_name, j.start, j.end) for j in plan.jobs]


def test_objects_plan_as_their_keywords(cut: Path) -> None:
    _, by_keywords = plan_file(cut, handles=2, name_by="clip", ext="mkv")
    _, by_object = plan_file(cut, planning=Planning(handles=2, name_by="clip", ext="mkv"), reading=Reading())
    assert _ranges(by_object) == _ranges(by_keywords) and by_object.jobs
    assert _ranges(by_object) != _ranges(plan_file(cut)[1])  # the handles and names did reach the planner
    preview = preview_timeline(cut, cut.with_name("o.otio"), cut.parent / "m", planning=Planning(handles=2))
    assert [j.start for j in preview.render] == [j.start for j in plan_file(cut, handles=2)[1].jobs]


def test_an_object_and_its_keywords_together_are_refused(cut: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="planning= or its fields.*handles"):
        plan_file(cut, handles=3, planning=Planning(handles=2))
    with pytest.raises(TypeError, match="rendering= or its fields.*force"):
        upscale_timeline(cut, tmp_path / "o.otio", tmp_path / "m", force=True, rendering=Rendering())
    with pytest.raises(TypeError, match="reading: expected a Reading"):
        plan_file(cut, reading={"rate": 24})
    assert not (tmp_path / "m").exists()  # refused before anything was made


def test_rendering_object_reaches_the_renderer(cut: Path, tmp_path: Path) -> None:
    spy = F.SpyRenderer()
    result = upscale_timeline(cut, tmp_path / "o.otio", tmp_path / "m", rendering=Rendering(renderer=spy),
                              planning=Planning(handles=1))
    assert [c["output"] for c in spy.calls] == [j.output_name for j in result.plan.jobs]

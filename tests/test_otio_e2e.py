"""The default renderer end to end: a tiny random-weight release through
``VideoUpscaler`` and ``VideoWriter``, from a timeline to relinked ProRes media."""

from __future__ import annotations

import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

from uav_otio import UPSCALED_KEY, UpscalerRenderer, upscale_timeline  # noqa: E402


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    from uav import VideoUpscaler
    from uav.weights import make_tiny_release

    root = make_tiny_release(tmp_path_factory.mktemp("otio_release") / "upscale_a_video")
    return VideoUpscaler.from_pretrained(root, device="cpu")


class _SpyUpscaler:
    """Wraps the real upscaler and records the settings of each call."""

    def __init__(self, inner):
        self.inner = inner
        self.settings = []
        self.source = "tiny-random"

    def upscale(self, video, **kw):
        self.settings.append(kw["settings"])
        return self.inner.upscale(video, **kw)


@pytest.mark.slow
def test_default_renderer_upscales_relinks_with_timecode_and_audio(upscaler, tmp_path):
    src = F.make_movie(tmp_path / "D004.mov", 30, "01:00:00:00", audio=True)
    tl = otio.schema.Timeline("e2e")
    tl.metadata["uav"] = {"steps": 1, "guidance_scale": 1, "negative_prompt": ""}
    shot = F.clip("SH030", F.ext_ref(src, 30, F.TC_START), F.TC_START + 10, 3)
    shot.markers.append(otio.schema.Marker(name="uav: prompt=a grey wall; noise_level=40; color_fix=adain"))
    tl.tracks.append(otio.schema.Track("V1", children=[shot]))

    spy = _SpyUpscaler(upscaler)
    result = upscale_timeline(tl, tmp_path / "e2e_uav.otio", tmp_path / "media",
                              renderer=UpscalerRenderer(upscaler=spy), handles=1)

    (settings,) = spy.settings
    assert (settings.prompt, settings.noise_level, settings.color_fix) == ("a grey wall", 40, "adain")
    assert (settings.num_inference_steps, settings.guidance_scale, settings.seed) == (1, 1, 10)

    out = tmp_path / "media" / "D004_uav.mov"
    frames, info = F.read_movie(out)
    assert len(frames) == 5  # 3 used + 1 handle each side
    assert (info["width"], info["height"]) == (4 * F.W, 4 * F.H)
    assert info["fps"] == 24 and info["timecode"] == "01:00:00:09"
    assert info["audio_seconds"] == pytest.approx(5 / 24, abs=0.01)  # the audio of the rendered frames

    (clip,) = result.timeline.find_clips()
    assert clip.active_media_reference_key == UPSCALED_KEY
    assert clip.media_reference.available_range == F.TR(F.RT(F.TC_START + 9, 24), F.RT(5, 24))
    assert clip.media_reference.metadata["uav"]["model"]["weights"] == "tiny-random"

    # the rerun loads nothing and renders nothing
    again = _SpyUpscaler(upscaler)
    upscale_timeline(tl, tmp_path / "e2e_uav.otio", tmp_path / "media", renderer=UpscalerRenderer(upscaler=again),
                     handles=1)
    assert again.settings == []


def test_default_renderer_needs_weights():
    with pytest.raises(ValueError, match="weights is required"):
        UpscalerRenderer()

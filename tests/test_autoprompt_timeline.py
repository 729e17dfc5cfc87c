"""``prompt=auto`` shots in a timeline: one caption per job, kept in the manifest, written
into the relinked reference's ``metadata["uav"]``, and no re-captioning on a rerun.

The spy renderer (tests/otio_fixtures.py) writes real media; a tiny random BLIP model
saved in the test writes the captions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from captioner_models import make_tiny_blip
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402

import uav.captioning as captioning  # noqa: E402
from uav.captioning import CaptionError, caption_clip  # noqa: E402
from uav_otio import UPSCALED_KEY, upscale_timeline  # noqa: E402
from uav_otio.manifest import MANIFEST_NAME  # noqa: E402
from uav_otio.plan import plan_timeline  # noqa: E402
from uav_otio.shots import DEFAULT_SETTINGS, ShotSettingsError, resolve_clip_settings  # noqa: E402


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("captioner") / "blip")


@pytest.fixture
def captioned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | str]]:
    """Every frame a captioner is asked to describe: ``(video, frame)``."""
    calls: list[tuple[str, int | str]] = []
    real = captioning.ClipCaptioner.caption

    def spy(self, video, **kwargs):
        calls.append((str(video), kwargs.get("frame", "first")))
        return real(self, video, **kwargs)

    monkeypatch.setattr(captioning.ClipCaptioner, "caption", spy)
    return calls


def _timeline(media: dict[str, Path]) -> otio.schema.Timeline:
    """SH010 (A, auto from its metadata, middle frame), SH020 (B, auto from a marker) and
    SH030 (C, a written prompt) on V1."""
    tl = otio.schema.Timeline("auto prompts")
    tl.metadata["uav"] = {"captioner": "blip-local"}  # for the whole cut: only auto shots take it
    a = F.clip("SH010", F.ext_ref(media["a"], 60, F.TC_START), F.TC_START + 10, 8)
    a.metadata["uav"] = {"prompt": "auto", "caption_frame": "middle"}
    b = F.clip("SH020", F.ext_ref(media["b"]), 5, 6)
    b.markers.append(otio.schema.Marker(name="uav: prompt=Auto"))
    c = F.clip("SH030", F.ext_ref(media["c"], 40), 0, 4)
    c.metadata["uav"] = {"prompt": "a grey wall"}
    tl.tracks.append(otio.schema.Track("V1", children=[a, b, c]))
    return tl


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "src"
    root.mkdir()
    return {"a": F.make_movie(root / "A001.mov", 60, "01:00:00:00"), "b": F.make_movie(root / "B002.mov", 60),
            "c": F.make_movie(root / "C003.mov", 40)}


@pytest.mark.slow
def test_auto_shots_caption_once_and_a_rerun_captions_nothing(media, blip, captioned, tmp_path) -> None:
    options = {"model": str(blip), "max_new_tokens": 4}
    out, mdir = tmp_path / "cut_uav.otio", tmp_path / "media"
    spy = F.SpyRenderer()
    result = upscale_timeline(_timeline(media), out, mdir, renderer=spy, handles=2, captioner_options=options)

    # each auto shot captioned once, on its used range (handles excluded); the written prompt not at all
    assert sorted(captioned) == sorted([(str(media["a"]), 4), (str(media["b"]), 0)])
    want_a = caption_clip(media["a"], "blip-local", options, frame="middle", start=10, end=18)
    want_b = caption_clip(media["b"], "blip-local", options, start=5, end=11)
    prompts = {call["clips"][0]: call["settings"]["prompt"] for call in spy.calls}
    assert prompts == {"SH010": want_a.text, "SH020": want_b.text, "SH030": "a grey wall"}

    # the caption lands in the relinked reference's metadata["uav"]; the clip's own metadata stays the editor's
    written = otio.adapters.read_from_file(str(out))
    meta = {c.name: c.media_reference.metadata["uav"] for c in written.find_clips()}
    assert all(c.active_media_reference_key == UPSCALED_KEY for c in written.find_clips())
    assert meta["SH010"]["caption"]["caption"] == want_a.text
    assert meta["SH010"]["caption"]["frame"] == F.TC_START + 14  # the middle of [86410, 86418), in media frames
    assert meta["SH020"]["caption"]["caption"] == want_b.text and meta["SH020"]["caption"]["frame"] == 5
    assert "caption" not in meta["SH030"]
    assert dict(next(c for c in written.find_clips() if c.name == "SH010").metadata["uav"]) == \
        {"prompt": "auto", "caption_frame": "middle"}

    manifest = json.loads((mdir / MANIFEST_NAME).read_text())
    assert sorted(e["caption"] for e in manifest["captions"].values()) == sorted([want_a.text, want_b.text])
    assert len(result.report.rendered) == 3

    # a rerun: nothing rendered, nothing captioned, the captions still in the timeline
    captioned.clear()
    again = F.SpyRenderer()
    rerun = upscale_timeline(_timeline(media), out, mdir, renderer=again, handles=2, captioner_options=options)
    assert captioned == [] and again.calls == [] and len(rerun.report.cached) == 3
    written = otio.adapters.read_from_file(str(out))
    assert {c.name: c.media_reference.metadata["uav"].get("caption", {}).get("caption")
            for c in written.find_clips()} == {"SH010": want_a.text, "SH020": want_b.text, "SH030": None}

    # a resumed run (an output lost, as after a kill) renders it again with the kept caption
    name_b = next(r.job.output_name for r in rerun.report.results if r.job.clip_names == ("SH020",))
    (mdir / name_b).unlink()
    resumed = F.SpyRenderer()
    upscale_timeline(_timeline(media), out, mdir, renderer=resumed, handles=2, captioner_options=options)
    assert captioned == []
    assert [(c["clips"], c["settings"]["prompt"]) for c in resumed.calls] == [(["SH020"], want_b.text)]


def test_missing_captioner_folder_fails_before_any_render(media, tmp_path) -> None:
    spy = F.SpyRenderer()
    with pytest.raises(CaptionError) as info:
        upscale_timeline(_timeline(media), tmp_path / "cut_uav.otio", tmp_path / "media", renderer=spy,
                         captioner_options={"model": str(tmp_path / "no_model")})
    assert spy.calls == [] and "\n" not in str(info.value) and "no_model" in str(info.value)
    assert not (tmp_path / "cut_uav.otio").exists()


def test_hashes_of_shots_without_auto_do_not_change(media) -> None:
    tl = _timeline(media)
    plan = plan_timeline(tl, probe=False)
    hashes = {job.clip_names[0]: job for job in plan.jobs}
    # a written prompt: the timeline's captioner is not part of its settings (nor its hash)
    assert set(hashes["SH030"].settings) == set(DEFAULT_SETTINGS)
    tl.metadata["uav"] = {}
    assert {j.clip_names[0]: j.settings_hash for j in plan_timeline(tl, probe=False).jobs}["SH030"] == \
        hashes["SH030"].settings_hash
    # auto shots carry what their caption is made from
    assert hashes["SH010"].settings["captioner"] == "blip-local"
    assert hashes["SH010"].settings["caption_frame"] == "middle"
    assert hashes["SH020"].settings["prompt"] == "auto" and hashes["SH020"].settings["caption_frame"] == "first"


def test_pinned_hashes_of_a_cut_without_auto_prompts() -> None:
    # computed before automatic prompts existed: their keys must not reach these shots' hashes
    def ref(name: str) -> otio.schema.ExternalReference:
        return otio.schema.ExternalReference(target_url=f"file:///media/{name}.mov",
                                             available_range=F.TR(F.RT(0, 24), F.RT(60, 24)))

    tl = otio.schema.Timeline("hashes")
    tl.metadata["uav"] = {"noise_level": 60}
    a = otio.schema.Clip(name="SH010", media_reference=ref("A001"), source_range=F.TR(F.RT(10, 24), F.RT(20, 24)))
    a.metadata["uav"] = {"prompt": "a red car"}
    b = otio.schema.Clip(name="SH020", media_reference=ref("B002"), source_range=F.TR(F.RT(5, 24), F.RT(10, 24)))
    tl.tracks.append(otio.schema.Track("V1", children=[a, b]))
    hashes = {j.clip_names[0]: j.settings_hash for j in plan_timeline(tl, probe=False).jobs}
    assert hashes == {"SH010": "889ee2ddab494e73", "SH020": "fd06f78a226e7e67"}


def test_bad_caption_frame_names_the_clip_and_the_layer(media) -> None:
    clip = F.clip("SH040", F.ext_ref(media["a"]), 0, 4)
    clip.markers.append(otio.schema.Marker(name="uav: prompt=auto; caption_frame=last"))
    with pytest.raises(ShotSettingsError, match=r"clip 'SH040': caption_frame from marker name .*first, middle"):
        resolve_clip_settings(clip)


@pytest.mark.slow
def test_cli_timeline_upscale_json_lists_the_captions(media, blip, captioned, tmp_path) -> None:
    import uav.cli
    from uav.cli.app import app

    uav.cli._load_commands()
    tl_path = tmp_path / "cut.otio"
    otio.adapters.write_to_file(_timeline(media), str(tl_path))
    args = ["timeline", "upscale", str(tl_path), "-o", str(tmp_path / "cut_uav.otio"), "--media-dir",
            str(tmp_path / "media"), "--renderer", "otio_fixtures:SpyRenderer", "--handles", "0", "--json",
            "--caption-frame", "1", "--captioner-option", f"model={blip}", "--captioner-option", "max_new_tokens=4"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    # --caption-frame overrides every shot; the written prompt stays as it is
    assert sorted(captioned) == sorted([(str(media["a"]), 1), (str(media["b"]), 1)])
    assert len(summary["captions"]) == 2
    want = caption_clip(media["b"], "blip-local", {"model": blip, "max_new_tokens": 4}, frame=1, start=5, end=11)
    assert want.text in summary["captions"].values()

    bad = CliRunner().invoke(app, [*args[:6], str(tmp_path / "media2"), *args[7:-4],
                                   "--captioner-option", f"model={tmp_path / 'gone'}"], catch_exceptions=False)
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "gone" in lines[0]

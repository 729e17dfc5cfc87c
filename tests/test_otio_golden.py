"""Golden files (issue #24 item 5): real small exports and the relinked timelines uav writes for them.

Each export in ``tests/data/otio_golden`` is hand-written in the form its editor writes
(Premiere's FCP 7 XML, Avid, Premiere and Resolve EDLs, Final Cut Pro X's FCPXML,
Kdenlive's project, OpenTimelineIO JSON) and names media on the editor's machine,
which the conform finds in a search folder. ``uav timeline upscale`` (with a spy
renderer) relinks it; the ``.otio`` it writes, with the test's folders and hashes
scrubbed (``otio_golden.normalised``), must be equivalent (OpenTimelineIO's
``is_equivalent_to``) to ``expected/<name>_uav.otio``. The input's own format must be
written too, not refused.

After a deliberate change of the output, rewrite the expected files with
``UAV_GOLDEN_UPDATE=1 bash scripts/test.sh tests/test_otio_golden.py`` and review the diff.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402
import otio_golden as G  # noqa: E402

from uav_otio import UPSCALED_KEY, upscale_timeline  # noqa: E402

EXPECTED = G.GOLDEN / "expected"
#: export -> (how to read it, the adapter that reads and writes its format)
CASES = {
    "premiere.xml": ({}, "fcp_xml"),
    "avid_pal.edl": ({"rate": "25"}, "cmx_3600"),
    "premiere_ntsc_df.edl": ({"rate": "29.97"}, "cmx_3600"),
    "resolve_24.edl": ({"rate": "24"}, "cmx_3600"),
    "fcpx.fcpxml": ({}, "fcpx_xml"),
    "kdenlive.kdenlive": ({}, "kdenlive"),
    "cut.otio": ({}, "otio_json"),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return G.make_media(tmp_path_factory.mktemp("golden") / "media")


def _relink(name: str, media: Path, out_dir: Path) -> tuple[Path, otio.schema.Timeline, list[str]]:
    options, _ = CASES[name]
    out = out_dir / f"{Path(name).stem}_uav.otio"
    result = upscale_timeline(G.GOLDEN / name, out, out_dir / "renders", renderer=F.SpyRenderer(), handles=2,
                              model={"weights": "golden"}, search_paths=[media], **options)
    return out, result.timeline, [str(p) for p in result.written]


@pytest.mark.parametrize("name", list(CASES))
def test_relinked_export_matches_its_golden_file(name, media, tmp_path):
    _, adapter = CASES[name]
    if adapter not in otio.adapters.available_adapter_names():
        pytest.skip(f"the {adapter} adapter is not installed (uav's 'otio' extra)")
    out, _, written = _relink(name, media, tmp_path)
    suffix = Path(name).suffix
    assert written == [str(out)] + ([str(out.with_suffix(suffix))] if suffix != ".otio" else [])  # none refused
    with contextlib.redirect_stdout(io.StringIO()):
        actual = G.normalised(otio.adapters.read_from_file(str(out)),
                              {media.parent: "/GOLDEN", tmp_path: "/GOLDEN/out", G.GOLDEN: "/GOLDEN/exports"})
    expected_path = EXPECTED / out.name
    if os.environ.get("UAV_GOLDEN_UPDATE"):
        EXPECTED.mkdir(exist_ok=True)
        otio.adapters.write_to_file(actual, str(expected_path))
    expected = otio.adapters.read_from_file(str(expected_path))
    if not actual.is_equivalent_to(expected):
        got = json.loads(otio.adapters.write_to_string(actual, "otio_json"))
        want = json.loads(otio.adapters.write_to_string(expected, "otio_json"))
        pytest.fail(f"{out.name} differs from {expected_path}:\n" + "\n".join(_differences(want, got)[:20]))


def _differences(want: object, got: object, where: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k in sorted(set(want) | set(got)) for d in _differences(want.get(k), got.get(k), f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in _differences(w, g, f"{where}[{i}]")]
    return [] if want == got else [f"{where}: expected {want!r}, got {got!r}"]


def test_golden_files_are_small_and_every_export_has_its_expected_output():
    exports = sorted(p.name for p in G.GOLDEN.iterdir() if p.is_file() and p.name not in ("media.json", "README.md"))
    assert exports == sorted(CASES)
    assert sorted(p.name for p in EXPECTED.iterdir()) == sorted(f"{Path(n).stem}_uav.otio" for n in CASES)
    assert all(p.stat().st_size < 50_000 for p in G.GOLDEN.rglob("*") if p.is_file())


def test_the_golden_outputs_point_every_rendered_clip_at_its_render():
    """What the expected files say, read for its meaning: every enabled video clip of a
    relinked export points at a ``*_uav.mov`` render whose range covers the clip."""
    for path in sorted(EXPECTED.iterdir()):
        tl = otio.adapters.read_from_file(str(path))
        video = [c for t in tl.video_tracks() if t.enabled for c in t.find_clips()
                 if c.enabled and c.metadata.get("fcp_xml", {}).get("enabled") != "FALSE"]
        assert video, path.name
        for clip in video:
            assert clip.active_media_reference_key == UPSCALED_KEY, (path.name, clip.name)
            ref = clip.media_reference
            assert ref.target_url.startswith("file:///GOLDEN/out/renders/") and ref.target_url.endswith("_uav.mov")
            used = clip.trimmed_range()
            if not clip.effects:
                assert ref.available_range.contains(used.start_time), (path.name, clip.name)


def test_a_clip_disabled_in_premiere_is_not_rendered(media):
    """The fcp_xml adapter keeps ``<enabled>FALSE</enabled>`` only in the clip's metadata."""
    from uav_otio import plan_file

    _, plan = plan_file(G.GOLDEN / "premiere.xml", search_paths=[media], handles=2)
    assert [(s.media, s.reason) for s in plan.skipped] == [("C001_A.mov", "clip is disabled"),
                                                           ("C001_A.mov", "audio track, not video")]

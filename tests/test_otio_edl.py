"""EDLs as Avid, Premiere and Resolve write them (issue #23 item 6): exact rates, drop frame,
motion effects, keys and header junk, and one line for what still cannot be read.

The EDLs are hand-written in ``tests/data/otio_golden`` (``avid_pal.edl``,
``premiere_ntsc_df.edl``, ``resolve_24.edl``, see its README); their media is made by
``otio_golden.make_media``. The odd cases are inline below."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import otio_golden as G  # noqa: E402

import uav.cli.timeline  # noqa: E402,F401  (attaches the sub-app)
from uav.cli.app import app  # noqa: E402
from uav_otio import plan_file  # noqa: E402
from uav_otio.edl import edl_rate, prepare_edl  # noqa: E402

pytestmark = pytest.mark.skipif("cmx_3600" not in otio.adapters.available_adapter_names(),
                                reason="the cmx_3600 adapter is not installed (uav's 'otio' extra)")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return G.make_media(tmp_path_factory.mktemp("edl_media"))


def run(*args):
    return CliRunner().invoke(app, ["timeline", *map(str, args)])


def one_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


def uses(plan) -> list[tuple[str, int, int, float]]:
    """(media, first file frame, end, time scalar) of every planned clip."""
    def scalar(clip):
        warps = [e.time_scalar for e in clip.effects if isinstance(e, otio.schema.LinearTimeWarp)]
        return round(warps[0], 3) if warps else 1.0

    return [(u.media.path.name, u.used_start - u.media.available_start, u.used_end - u.media.available_start,
             scalar(u.clip)) for u in plan.uses]


# --------------------------------------------------------------------------- #
# rates
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("given,rate", [("29.97", Fraction(30000, 1001)), ("30000/1001", Fraction(30000, 1001)),
                                        ("23.976", Fraction(24000, 1001)), ("23.98", Fraction(24000, 1001)),
                                        ("59.94", Fraction(60000, 1001)), ("25", Fraction(25)), (24, Fraction(24)),
                                        (29.97, Fraction(30000, 1001)), (24000 / 1001, Fraction(24000, 1001)),
                                        ("12.5", Fraction(25, 2))])
def test_rates_read_as_the_rest_of_uav_reads_them(given, rate):
    assert edl_rate(given) == rate


@pytest.mark.parametrize("spelling", ["29.97", "30000/1001"])
def test_both_spellings_of_ntsc_plan_the_same(media, spelling):
    _, plan = plan_file(G.GOLDEN / "premiere_ntsc_df.edl", rate=spelling, search_paths=[media], handles=2)
    assert plan.warnings == []  # the rate was given: nothing assumed
    assert uses(plan)[0] == ("interview_cam_a.mov", 30, 90, 1.0)


@pytest.mark.parametrize("bad", ["abc", "0", "-25", "nan", "1/0"])
def test_a_bad_rate_is_one_line_naming_rate(media, bad):
    line = one_error(run("plan", G.GOLDEN / "avid_pal.edl", "--rate", bad))
    assert "--rate" in line and repr(bad) in line


# --------------------------------------------------------------------------- #
# the hand-written exports
# --------------------------------------------------------------------------- #


def test_avid_pal_dissolve_and_m2(media):
    _, plan = plan_file(G.GOLDEN / "avid_pal.edl", rate=25, search_paths=[media], handles=2)
    assert plan.warnings == []
    # the outgoing clip runs 10 frames into the dissolve; M2 050.0 at 25 fps is 2x over 13 record frames
    assert uses(plan) == [("A001C003_220314_R1AB.mov", 50, 85, 1.0), ("B002C001_220315_R2CD.mov", 25, 55, 1.0),
                          ("B002C001_220315_R2CD.mov", 100, 125, 2.0)]
    assert [s.reason for s in plan.skipped] == ["audio track, not video"] * 2  # the AA event's two tracks


def test_premiere_drop_frame_is_read_from_fcm(media):
    """``FCM: DROP FRAME`` with colons: 00:10:01:00 is frame 17,982 + 30 in drop frame (18,030 if
    it were read as non-drop: 18 frames later in the file)."""
    _, plan = plan_file(G.GOLDEN / "premiere_ntsc_df.edl", search_paths=[media], handles=2)
    assert plan.warnings == ["the EDL says FCM: DROP FRAME and no --rate was given: read at 29.97 fps (30000/1001)"]
    assert uses(plan) == [("interview_cam_a.mov", 30, 90, 1.0), ("broll_street.mov", 60, 105, 1.0),
                          ("interview_cam_a.mov", 165, 225, 1.0), ("broll_street.mov", 150, 208, 1.999)]
    assert one_error(run("plan", G.GOLDEN / "premiere_ntsc_df.edl", "--rate", "25")).endswith(
        "the EDL says FCM: DROP FRAME, which only 29.97 and 59.94 fps have, but --rate is 25: pass --rate 29.97 "
        "(or 59.94)")


def test_resolve_crlf_bom_reverse_m2_and_a_locator(media):
    _, plan = plan_file(G.GOLDEN / "resolve_24.edl", rate="24", search_paths=[media], handles=2)
    assert uses(plan) == [("A005C012_230101_AB12.mov", 245, 269, 1.0), ("A005C013_230101_AB12.mov", 25, 49, -1.0),
                          ("A005C012_230101_AB12.mov", 336, 360, 1.0)]
    assert [u.settings["noise_level"] for u in plan.uses] == [120, 120, 60]  # the LOC line is a marker


# --------------------------------------------------------------------------- #
# what editors write that the adapter does not read
# --------------------------------------------------------------------------- #

HEADER = "TITLE: odd\nFCM: NON-DROP FRAME\n\n"
EVENT_1 = "001  A001C003 V     C        10:00:02:00 10:00:03:00 01:00:00:00 01:00:01:00\n* SOURCE FILE: " \
          "A001C003_220314_R1AB\n"


def _plan(media, tmp_path, text: str, **kw):
    path = tmp_path / "cut.edl"
    path.write_text(text)
    return plan_file(path, rate=25, search_paths=[media], handles=0, **kw)[1]


def test_a_speed_change_without_a_readable_m2_is_kept_and_named(media, tmp_path):
    """The adapter stops on "source and record duration don't match"; uav reads the speed
    from the lengths and says so, naming the event."""
    for m2 in ("", "M2   B002C001       xx.x                11:00:04:00\n"):
        plan = _plan(media, tmp_path, HEADER + EVENT_1 + "\n002  B002C001 V     C        11:00:04:00 11:00:06:00 "
                     "01:00:01:00 01:00:02:00\n" + m2 + "* SOURCE FILE: B002C001_220315_R2CD\n")
        assert uses(plan)[1] == ("B002C001_220315_R2CD.mov", 100, 149, 2.0)
        assert plan.warnings[-1] == ("EDL event 002 (B002C001): the source runs 50 frames over a record of 25 without "
                                     "an M2 line: read as a speed change of 2x")


def test_an_m2_with_drop_frame_separators_is_read(media, tmp_path):
    plan = _plan(media, tmp_path, HEADER + EVENT_1 + "\n002  B002C001 V     C        11:00:04:00 11:00:05:00 "
                 "01:00:01:00 01:00:01:13\nM2   B002C001       050.0                11:00:04;00\n"
                 "* SOURCE FILE: B002C001_220315_R2CD\n")
    assert uses(plan)[1][3] == 2.0 and plan.warnings == []


def test_a_key_keeps_its_background_and_names_the_skipped_fill(media, tmp_path):
    plan = _plan(media, tmp_path, HEADER + EVENT_1 + "\n002  A001C003 V     KB       10:00:03:00 10:00:04:00 "
                 "01:00:01:00 01:00:02:00\n002  TITLE01  V     K    000 00:00:00:00 00:00:01:00 01:00:01:00 "
                 "01:00:02:00\n* SOURCE FILE: A001C003_220314_R1AB\n")
    assert [u[:3] for u in uses(plan)] == [("A001C003_220314_R1AB.mov", 50, 75), ("A001C003_220314_R1AB.mov", 75, 100)]
    assert plan.warnings == ["EDL event 002: the key (K) of TITLE01 is skipped; its background is read as a cut"]


def test_header_junk_and_a_byte_order_mark_are_dropped(media, tmp_path):
    plan = _plan(media, tmp_path, "\ufeff* EXPORTED BY AVID\nTITLE: x\nREEL TABLE FOLLOWS\nFCM: NON-DROP FRAME\n"
                 + EVENT_1)
    assert [u[:3] for u in uses(plan)] == [("A001C003_220314_R1AB.mov", 50, 75)]


def test_an_edit_type_cmx_lacks_names_the_event(media, tmp_path):
    (tmp_path / "cut.edl").write_text(HEADER + EVENT_1 + "\n002  A001C003 V     X        10:00:03:00 10:00:04:00 "
                                      "01:00:01:00 01:00:02:00\n")
    line = one_error(run("plan", tmp_path / "cut.edl", "--rate", "25"))
    assert line.endswith("EDL event 002: edit type 'X' is not a CMX 3600 type (C, D, Wnnn, K, KB, KO): fix the "
                         "event or export the EDL as CMX 3600 again")


@pytest.mark.parametrize("text,hint", [
    (HEADER + EVENT_1 + "002  A001C003 V     C        10:00:05:00 10:00:06:00 01:00:00:12 01:00:01:12\n",
     "pass --adapter-option ignore_timecode_mismatch=true"),
    (HEADER + "001  A001C003 V     C        10:00:02:00 10:00:03:00 01:00:00:00\n", "export the EDL as CMX 3600 again"),
    ("TITLE: x\n001  A001C003 V     C        10:00:02:00 10:00:03:00 01:00:00:00 01:00:00:24\n"
     "002  A001C003 V     C        10:00:03:00 10:00:04:00 01:00:00:24 01:00:01:24\n", "--rate"),
])
def test_what_still_cannot_be_read_says_what_to_do(tmp_path, text, hint):
    (tmp_path / "cut.edl").write_text(text)
    res = run("plan", tmp_path / "cut.edl", "--json", *(["--rate", "25"] if "--rate" != hint else []))
    line = one_error(res)
    assert str(tmp_path / "cut.edl") in line and hint in line
    assert json.loads(res.stdout)["ok"] is False


def test_prepare_edl_leaves_a_plain_edl_alone():
    text = HEADER + EVENT_1
    prepared = prepare_edl(text, Fraction(25))
    assert prepared.notes == [] and prepared.rate == 25
    assert otio.adapters.read_from_string(prepared.text, "cmx_3600", rate=25).find_clips()[0].source_range == \
        otio.adapters.read_from_string(text, "cmx_3600", rate=25).find_clips()[0].source_range

"""Media, timelines and a spy renderer for the OpenTimelineIO integration tests.

Everything is generated here: tiny movies written with PyAV (frame ``i`` is a flat
grey of level ``4*i`` so a decoded frame tells which source frame it was), PNG
image sequences, and "golden" timelines covering the cases the integration must
handle. The spy renderer writes real media (2x nearest-neighbour "upscale") with
the job's frame rate and start timecode, so relinking, timecode and resume are
exercised for real.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import opentimelineio as otio

from uav_otio.render import atomic_output

RT = otio.opentime.RationalTime
TR = otio.opentime.TimeRange
FPS = 24
W, H = 32, 24
TC_START = 86400  # 01:00:00:00 at 24 fps


def level(i: int) -> int:
    return (4 * i) % 256


def write_movie(path: Path, frames: list[np.ndarray], fps: Fraction | int = FPS, timecode: str | None = None,
                audio: bool = False) -> None:
    """Encode RGB uint8 frames into ``path`` (with ``audio``: a 48 kHz tone as long as the video)."""
    container = av.open(str(path), "w")
    try:
        if timecode:
            container.metadata["timecode"] = timecode
        # PNG in MOV: lossless and intra-only, so decoded levels are exact.
        stream = container.add_stream("png", rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "rgb24"
        sr = 48000
        astream = container.add_stream("pcm_s16le", rate=sr, layout="mono") if audio else None
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
        if astream is not None:
            n = int(round(len(frames) / float(fps) * sr))
            tone = (np.sin(np.arange(n) * 2 * np.pi * 440 / sr) * 8000).astype(np.int16)[None]
            chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            chunk.sample_rate = sr
            chunk.pts = 0
            for pkt in astream.encode(chunk):
                container.mux(pkt)
            for pkt in astream.encode():
                container.mux(pkt)
    finally:
        container.close()


def make_movie(path: Path, n: int = 60, timecode: str | None = None, audio: bool = False) -> Path:
    frames = [np.full((H, W, 3), level(i), np.uint8) for i in range(n)]
    write_movie(path, frames, FPS, timecode, audio)
    return path


def make_sequence(folder: Path, prefix: str = "plate.", start: int = 1001, n: int = 20) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{prefix}{start + i:04d}.png"), np.full((H, W, 3), level(i), np.uint8))
    return folder


def read_movie(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """All frames (RGB) and the header facts of a movie."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        audio = c.streams.audio[0] if c.streams.audio else None
        info = {
            "audio_seconds": float(audio.duration * audio.time_base) if audio is not None and audio.duration else None,
            "fps": vs.average_rate,
            "timecode": vs.metadata.get("timecode") or c.metadata.get("timecode"),
            "width": vs.codec_context.width,
            "height": vs.codec_context.height,
        }
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, info


def ext_ref(path: Path, n: int = 60, start: int = 0) -> otio.schema.ExternalReference:
    return otio.schema.ExternalReference(target_url=path.resolve().as_uri(), available_range=TR(RT(start, FPS), RT(n, FPS)))


def clip(name: str, ref: Any, start: int, dur: int, **kw: Any) -> otio.schema.Clip:
    return otio.schema.Clip(name=name, media_reference=ref, source_range=TR(RT(start, FPS), RT(dur, FPS)), **kw)


def one_track(name: str, items: list[Any]) -> otio.schema.Timeline:
    """A timeline ``name`` whose one video track, V1, holds ``items``."""
    tl = otio.schema.Timeline(name)
    v1 = otio.schema.Track("V1")
    v1.extend(items)
    tl.tracks.append(v1)
    return tl


# --------------------------------------------------------------------------- #
# golden timelines (media made on the fly in ``root``)
# --------------------------------------------------------------------------- #


def media_set(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = {
        "a": make_movie(root / "A001.mov", 60, "01:00:00:00"),
        "b": make_movie(root / "B002.mov", 60),
        "c": make_movie(root / "C003.mov", 40),
        "e": make_movie(root / "E005.mov", 120),
    }
    out["seq"] = make_sequence(root / "plates")
    return out


def simple_cut(m: dict[str, Path]) -> otio.schema.Timeline:
    """V1: A [86410, 86430) then B [5, 25); A1: an audio clip; V2 disabled."""
    tl = otio.schema.Timeline("simple cut")
    v1 = otio.schema.Track("V1")
    v1.extend([clip("SH010", ext_ref(m["a"], 60, TC_START), TC_START + 10, 20), clip("SH020", ext_ref(m["b"]), 5, 20)])
    a1 = otio.schema.Track("A1", kind=otio.schema.TrackKind.Audio)
    a1.append(clip("dialog", ext_ref(m["b"]), 0, 40))
    v2 = otio.schema.Track("V2")
    v2.append(clip("off", ext_ref(m["c"], 40), 0, 10))
    v2.enabled = False
    tl.tracks.extend([v1, v2, a1])
    return tl


def cross_dissolve(m: dict[str, Path]) -> otio.schema.Timeline:
    """A [20, 40) -> 4+6 frame dissolve -> B [30, 50)."""
    return one_track("dissolve", [
        clip("out", ext_ref(m["a"], 60, TC_START), TC_START + 20, 20),
        otio.schema.Transition(name="dissolve", in_offset=RT(4, FPS), out_offset=RT(6, FPS)),
        clip("in", ext_ref(m["b"]), 30, 20),
    ])


def nested_stack(m: dict[str, Path]) -> otio.schema.Timeline:
    """V1: gap 5, then a nested stack trimmed to its frames [5, 15) holding C [0, 30)."""
    inner = otio.schema.Track("inner V1")
    inner.append(clip("nested C", ext_ref(m["c"], 40), 0, 30))
    stack = otio.schema.Stack(name="compound", source_range=TR(RT(5, FPS), RT(10, FPS)))
    stack.append(inner)
    return one_track("nested", [otio.schema.Gap(source_range=TR(RT(0, FPS), RT(5, FPS))), stack])


def speed_change(m: dict[str, Path]) -> otio.schema.Timeline:
    """Double speed over 10 frames from 10, and a freeze frame at 40."""
    fast = clip("fast", ext_ref(m["e"], 120), 10, 10)
    fast.effects.append(otio.schema.LinearTimeWarp(time_scalar=2.0))
    freeze = clip("freeze", ext_ref(m["e"], 120), 100, 8)
    freeze.effects.append(otio.schema.FreezeFrame())
    return one_track("speed", [fast, freeze])


def markers_with_settings(m: dict[str, Path]) -> otio.schema.Timeline:
    sh = clip("hero", ext_ref(m["b"]), 10, 10)
    sh.markers.append(
        otio.schema.Marker(
            name="uav: prompt=a red car; noise_level=60",
            marked_range=TR(RT(12, FPS), RT(0, FPS)),
            comment="uav: color_fix=Wavelet; propagation_steps=3,5",
        )
    )
    sh.metadata["uav"] = {"noise_level": 70, "guidance_scale": 4}
    tl = one_track("markers", [sh, clip("plain", ext_ref(m["c"], 40), 0, 10)])
    tl.metadata["uav"] = {"noise_level": 80, "steps": 20}
    return tl


def missing_media(m: dict[str, Path]) -> otio.schema.Timeline:
    return one_track("missing", [
        clip("offline", otio.schema.MissingReference(), 0, 10),
        clip("gone", otio.schema.ExternalReference(target_url=(m["a"].parent / "nope.mov").as_uri()), 0, 10),
        clip("bars", otio.schema.GeneratorReference(generator_kind="SMPTEBars"), 0, 10),
        clip("ok", ext_ref(m["b"]), 0, 10),
    ])


def image_sequence(m: dict[str, Path]) -> otio.schema.Timeline:
    ref = otio.schema.ImageSequenceReference(
        target_url_base=m["seq"].resolve().as_uri() + "/",
        name_prefix="plate.",
        name_suffix=".png",
        start_frame=1001,
        frame_step=1,
        rate=FPS,
        frame_zero_padding=4,
        available_range=TR(RT(0, FPS), RT(20, FPS)),
    )
    return one_track("sequence", [clip("plate", ref, 8, 6)])


def shared_source(m: dict[str, Path]) -> otio.schema.Timeline:
    """E used three times: [0,10) and [15,25) merge with handles; [90,100) stays apart."""
    return one_track("shared", [
        clip("E first", ext_ref(m["e"], 120), 0, 10),
        clip("B", ext_ref(m["b"]), 0, 5),
        clip("E second", ext_ref(m["e"], 120), 15, 10),
        clip("E far", ext_ref(m["e"], 120), 90, 10),
    ])


GOLDEN = {
    "simple_cut": simple_cut,
    "cross_dissolve": cross_dissolve,
    "nested_stack": nested_stack,
    "speed_change": speed_change,
    "markers": markers_with_settings,
    "missing_media": missing_media,
    "image_sequence": image_sequence,
    "shared_source": shared_source,
}


def ranges_in_parent(tl: otio.schema.Timeline) -> dict[str, Any]:
    """Every item's range in its parent (and clips' trimmed range), to compare timing."""
    out = {}
    for i, item in enumerate(tl.find_children()):
        if isinstance(item, otio.schema.Transition):
            continue
        out[f"{i}:{item.name}"] = (str(item.range_in_parent()), str(item.trimmed_range()))
    return out


# --------------------------------------------------------------------------- #
# the spy renderer
# --------------------------------------------------------------------------- #


def read_job_frames(job: Any) -> list[np.ndarray]:
    if job.media.kind == "image_sequence":
        import cv2

        return [cv2.cvtColor(cv2.imread(str(job.media.frame_path(i))), cv2.COLOR_BGR2RGB)
                for i in range(job.first_index, job.end_index)]
    frames, _ = read_movie(job.media.path)
    return frames[job.first_index:job.end_index]


#: every call any SpyRenderer saw (the CLI builds its own instance)
CALLS: list[dict[str, Any]] = []


class SpyRenderer:
    """Records each call, then writes the 2x nearest-neighbour frames as a real movie.

    ``hang_on`` names an output at which the renderer writes part of its temporary
    file and then sleeps (for kill tests); ``fail_on`` raises KeyboardInterrupt there.
    """

    def __init__(self, hang_on: str | None = None, fail_on: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.hang_on = hang_on
        self.fail_on = fail_on

    def __call__(self, job: Any, settings: dict[str, Any], output_path: Path, progress: Any = None) -> None:
        frames = read_job_frames(job)
        call = {
            "output": output_path.name,
            "settings": dict(settings),
            "frames": len(frames),
            "levels": [int(round(float(f.mean()))) for f in frames],
            "clips": list(job.clip_names),
            "start": job.start,
            "end": job.end,
        }
        self.calls.append(call)
        CALLS.append(call)
        big = [f.repeat(2, axis=0).repeat(2, axis=1) for f in frames]
        with atomic_output(output_path) as tmp:
            if output_path.name in (self.hang_on, self.fail_on):
                tmp.write_bytes(b"\0" * 1024)  # a partial file, as a real writer would leave
                if output_path.name == self.fail_on:
                    raise KeyboardInterrupt
                time.sleep(60)
            write_movie(tmp, big, job.fps, job.timecode)
            if progress:
                progress(len(big), job.frames)


# --------------------------------------------------------------------------- #
# frames a consumer can name (for NLEs and parsers that did not write the file)
# --------------------------------------------------------------------------- #

#: green level of each marked media; the blue level of a source frame and of its render
MEDIA_GREEN = {"A": 40, "B": 200}
SOURCE_BLUE, RENDER_BLUE = 64, 192
MARKED_FRAMES = 12


def marked_level(i: int) -> int:
    return 10 + 20 * i  # 12 frames, 20 levels apart: survives a trip through YUV


def marked_frame(media: str, i: int, rendered: bool = False, size: tuple[int, int] = (H, W)) -> np.ndarray:
    rgb = (marked_level(i), MEDIA_GREEN[media], RENDER_BLUE if rendered else SOURCE_BLUE)
    return np.broadcast_to(np.array(rgb, np.uint8), (*size, 3)).copy()


def make_marked_movie(path: Path, media: str, fps: Fraction | int, timecode: str | None = None) -> Path:
    """Frame ``i`` of media ``media`` is one flat colour: red says the frame, green the media."""
    write_movie(path, [marked_frame(media, i) for i in range(MARKED_FRAMES)], fps, timecode)
    return path


def name_frame(rgb: np.ndarray) -> tuple[str, int, bool] | str:
    """``(media, frame, rendered)`` of a decoded frame: the marked colour nearest its centre
    pixel; a frame of no marked colour (black, another picture) is named by its pixel."""
    h, w = rgb.shape[:2]
    pixel = rgb[h // 2, w // 2].astype(int)

    def distance(key: tuple[str, int, bool]) -> int:
        return int(np.abs(marked_frame(*key, size=(1, 1))[0, 0].astype(int) - pixel).sum())

    best = min(((m, i, r) for m in MEDIA_GREEN for i in range(MARKED_FRAMES) for r in (False, True)), key=distance)
    return best if distance(best) < 30 else f"unmarked pixel {pixel.tolist()}"


class MarkRenderer:
    """Writes the job's frames 2x larger with the render's blue level, as a real movie
    with the job's rate and timecode: a decoded frame says which source frame it is and
    that it is the render."""

    def __call__(self, job: Any, settings: dict[str, Any], output_path: Path, progress: Any = None) -> None:
        frames = []
        for f in read_job_frames(job):
            big = f.repeat(2, axis=0).repeat(2, axis=1)
            big[..., 2] = RENDER_BLUE
            frames.append(big)
        with atomic_output(output_path) as tmp:
            write_movie(tmp, frames, job.fps, job.timecode)

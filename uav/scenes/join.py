"""One output from scene segments, without encoding twice.

Every scene was encoded to a segment of its own (so each starts on a keyframe and no
frame refers across a cut); :func:`join_segments` copies the segments' video packets
one after another into the output (PyAV remux, timestamps shifted by the frames
before each segment), with the source's audio for the whole range (cut and muxed by
:class:`uav.io.audio.AudioCut`, as the writer does), its start timecode and, through
the copied stream parameters, the colour tags the segments were written with. Image
sequences are joined by linking the segments' images under their final numbers.
The output appears atomically: written under a temporary name, renamed when complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from uav.scenes.detect import SceneError

__all__ = ["join_segments", "link_sequence"]


def join_segments(segments: Sequence[Path], output: str | Path, *, fps: Fraction, frames: Sequence[int],
                  audio_source: str | Path | None = None, audio_start: int = 0, timecode: str | None = None) -> Path:
    """Remux the video ``segments`` (``frames[k]`` frames each) into ``output`` with the audio of
    ``audio_source``'s frames ``[audio_start, audio_start + sum(frames))``.

    Raises:
        SceneError: a segment that is not like the first (codec, size, encoder setup),
            or holds another number of frames than its scene.
    """
    from uav.io import atomic

    out = Path(output)
    with atomic.atomic_output(out) as tmp:
        _remux(segments, tmp, fps=Fraction(fps), frames=frames, audio_source=audio_source, audio_start=audio_start,
               timecode=timecode, suffix=out.suffix.lower())
    return out


def _remux(segments: Sequence[Path], tmp: Path, *, fps: Fraction, frames: Sequence[int], audio_source: Any,
           audio_start: int, timecode: str | None, suffix: str) -> None:
    import av

    from uav.io.audio import AudioCut
    from uav.io.provenance import PROVENANCE_KEY, provenance_json

    total = sum(frames)
    record = joined_provenance(segments, frames)
    free_tags = record is not None and suffix in (".mov", ".mp4")  # mov/mp4 drop free tags unless told
    out = av.open(str(tmp), mode="w", options={"movflags": "use_metadata_tags"} if free_tags else None)
    cut = None
    try:
        if timecode:
            out.metadata["timecode"] = timecode
        if record is not None and suffix != ".mxf":
            out.metadata[PROVENANCE_KEY] = provenance_json(record)
        with av.open(str(segments[0])) as first:
            template = first.streams.video[0]
            video = out.add_stream_from_template(template)
            # the muxer's timecode track needs the rate, which a template from an intra codec lacks
            video.codec_context.framerate = fps
            reference = _signature(template)
        if audio_source is not None:
            cut = AudioCut.open(Path(audio_source), audio_start, audio_start + total, fps)
            if cut is not None:
                cut.attach(out, suffix)
        done = 0
        last_dts: int | None = None
        for segment, count in zip(segments, frames):
            last_dts = _copy_segment(segment, out, video, reference, offset=done, expected=count, fps=fps,
                                     last_dts=last_dts)
            done += count
            if cut is not None:
                cut.pump(Fraction(done) / fps)
        if cut is not None:
            cut.finish(Fraction(total) / fps)
    finally:
        if cut is not None:
            cut.close()
        out.close()


def _signature(stream: Any) -> tuple[Any, ...]:
    """What must match for two encodes to share one stream: codec, size, pixel format, setup data."""
    cc = stream.codec_context
    return cc.name, cc.width, cc.height, cc.format.name if cc.format else None, bytes(cc.extradata or b"")


def _copy_segment(segment: Path, out: Any, video: Any, reference: tuple[Any, ...], *, offset: int, expected: int,
                  fps: Fraction, last_dts: int | None) -> int | None:
    """Copy one segment's packets, shifted by ``offset`` frames; returns the last decode time written."""
    import av

    with av.open(str(segment)) as src:
        stream = src.streams.video[0]
        if _signature(stream) != reference:
            raise SceneError(f"segment {segment.name} was encoded differently from the first one (codec, size or "
                             "encoder setup); remove the folder it lies in and render again")
        tb = stream.time_base
        shift = round(Fraction(offset) / fps / tb)
        count = 0
        for packet in src.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            packet.pts += shift
            if packet.dts is not None:  # Matroska stores none: the muxer derives them from the reorder delay
                packet.dts += shift
                if last_dts is not None and packet.dts <= last_dts:
                    # two encodes' decode delays meet here; the order is what matters to a decoder
                    packet.dts = min(last_dts + 1, packet.pts)
                last_dts = packet.dts
            packet.stream = video
            packet.time_base = tb
            out.mux(packet)
            count += 1
    if count != expected:
        raise SceneError(f"segment {segment.name} holds {count} frames, its scene {expected}; remove the folder it "
                         "lies in and render again")
    return last_dts


def link_sequence(segments: Sequence[Path], output: str | Path, *, pattern: str, frames: Sequence[int],
                  start_number: int = 0, audio_source: str | Path | None = None, audio_start: int = 0,
                  fps: Fraction | None = None) -> Path:
    """Join image-sequence segments (folders) into ``output``: each image linked (or copied) under its
    final number, plus the audio as ``audio.wav``; the folder appears atomically."""
    from uav.io import atomic
    from uav.io.provenance import SEQUENCE_SIDECAR, provenance_json

    out = Path(output)
    suffix = Path(pattern).suffix  # a segment folder also holds its audio and its provenance record
    with atomic.atomic_output(out, folder=True) as tmp:
        number = start_number
        for segment, count in zip(segments, frames):
            images = sorted(p for p in Path(segment).iterdir() if p.is_file() and p.suffix == suffix)
            if len(images) != count:
                raise SceneError(f"segment {Path(segment).name} holds {len(images)} images, its scene {count}")
            for image in images:
                _link(image, tmp / (pattern % number))
                number += 1
        record = joined_provenance(segments, frames)
        if record is not None:
            (tmp / SEQUENCE_SIDECAR).write_text(provenance_json(record, indent=2), encoding="utf-8")
        if audio_source is not None and fps is not None:
            _write_wav(tmp, Path(audio_source), audio_start, audio_start + sum(frames), fps)
    return out


def joined_provenance(segments: Sequence[Path], frames: Sequence[int]) -> dict[str, Any] | None:
    """The provenance of the joined output: the first segment's record, its source range
    widened to all scenes, and ``scenes`` listing each segment's own record (prompt, seed,
    settings and their hash may differ per scene). ``None`` when no segment holds one."""
    from uav.io.provenance import read_provenance

    records = [read_provenance(s)[0] for s in segments]
    if not any(records):
        return None
    joined = dict(next(r for r in records if r))
    source = dict(joined.get("source") or {})
    first, last = records[0] or {}, records[-1] or {}
    if "start_frame" in (first.get("source") or {}):
        source["start_frame"] = first["source"]["start_frame"]
    if "end_frame" in (last.get("source") or {}):
        source["end_frame"] = last["source"]["end_frame"]
    source["frames"] = sum(frames)
    joined["source"] = source
    joined["scenes"] = records
    return joined


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the segment stays intact until the join succeeded
    except OSError:
        shutil.copy2(src, dst)


def _write_wav(folder: Path, source: Path, start: int, end: int, fps: Fraction) -> None:
    import av

    from uav.io.audio import AudioCut
    from uav.io.writer import SEQUENCE_AUDIO_NAME

    cut = AudioCut.open(source, start, end, Fraction(fps))
    if cut is None:
        return
    try:
        with av.open(str(folder / SEQUENCE_AUDIO_NAME), mode="w", format="wav") as container:
            cut.attach(container, ".wav")
            cut.finish(Fraction(end - start) / Fraction(fps))
    finally:
        cut.close()

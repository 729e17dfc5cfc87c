"""The default renderer: uav's :class:`~uav.VideoUpscaler` on a job's frames.

Any callable ``renderer(job, settings, output_path, progress=None)`` can render a
plan (:func:`uav_otio.render.render_plan`); this one loads the model on first use,
maps a shot's settings onto the pipeline and writes the output through
:class:`uav.io.VideoWriter`, atomically, with the source's rate, timecode and audio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uav.shots.settings import to_upscale_settings

if TYPE_CHECKING:  # the types are for annotations only
    from .jobs import RenderJob

__all__ = ["UpscalerRenderer", "output_start_number"]


def _read_sequence(job: RenderJob) -> Any:
    """The job's image-sequence frames as RGB ``(T, H, W, 3)`` (uint8 or uint16)."""
    from uav.io import read_images

    return read_images([job.media.frame_path(index) for index in range(job.first_index, job.end_index)],
                       fps=job.fps)


def output_start_number(job: RenderJob) -> int:
    """The number of a sequence output's first file: the source's own number for that frame
    (an image sequence's file number; a movie's media frame, which counts from its start
    timecode: 01:00:00:00 at 24 fps is 86400)."""
    if job.media.kind == "image_sequence":
        return job.media.start_number + job.first_index * job.media.frame_step
    return job.start


def _source_record(job: RenderJob) -> dict[str, Any]:
    """The provenance's ``source``: the media and the rendered range, in media frames."""
    return {"path": str(job.media.path) if job.media.path is not None else job.media.identity,
            "start_frame": job.start, "end_frame": job.end, "frames": job.frames, "fps": str(job.fps),
            "timecode": job.timecode}


class UpscalerRenderer:
    """The default renderer: :class:`uav.VideoUpscaler` on the job's frames, written
    by :class:`uav.io.writer.VideoWriter` (ProRes 422 HQ by default) with the
    source's frame rate, the job's start timecode and the source's audio for the
    rendered range.

    The model is loaded on first use and kept for the following jobs; a shot that
    asks for another ``vae`` variant reloads it.

    Args:
        weights: the release folder for ``VideoUpscaler.from_pretrained``.
        device: torch device name (default: CUDA when available).
        dtype: U-Net/text-encoder dtype (``"float16"``, ``"bfloat16"``, ``"float32"``).
        codec: a :data:`uav.io.writer.CODECS` name; an image-sequence codec (``exr``,
            ``dpx``, ``png``, ``tiff``) writes a folder whose frames are numbered by media
            frame (a source starting at 01:00:00:00 at 24 fps gives ``<name>.0086400.exr``).
        pix_fmt: the encoder's pixel format (default: the codec's).
        crf: H.264/H.265 quality, 0-51 (default: the codec's).
        compression: EXR compression (``piz``, ``zip``, ``dwaa``, ``none``; default piz).
        upscaler: a ready :class:`uav.VideoUpscaler` to use instead of loading ``weights``.
        scenes: ``"auto"`` cuts a render whose media itself holds hard cuts (a pre-edited
            source) into its scenes, each upscaled as its own clip (:func:`uav.scenes.run.upscale_scenes`);
            ``"none"`` (default) renders every job as one clip.
        load_options: further keyword arguments for ``VideoUpscaler.from_pretrained``.
    """

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        codec: str = "prores_hq",
        pix_fmt: str | None = None,
        crf: int | None = None,
        compression: str | None = None,
        upscaler: Any = None,
        scenes: str = "none",
        **load_options: Any,
    ) -> None:
        if scenes not in ("auto", "none"):
            raise ValueError(f"scenes must be 'auto' or 'none', got {scenes!r}")
        self.scenes = scenes
        if weights is None and upscaler is None:
            raise ValueError("weights is required: pass the release folder (--weights) or a ready upscaler")
        self.weights = Path(weights) if weights is not None else None
        self.device = device
        self.dtype = dtype
        self.codec = codec
        #: the encoder options given (``pix_fmt``, ``crf``, ``compression``), for the writer and the model record
        self.encoding = {k: v for k, v in {"pix_fmt": pix_fmt, "crf": crf, "compression": compression}.items()
                         if v is not None}
        self.load_options = {k: v for k, v in load_options.items() if v is not None}
        self._upscaler: Any = upscaler
        self._vae: str | None = None if upscaler is None else "given"

    @property
    def model(self) -> dict[str, Any]:
        """What identifies the model, for the cache key and the timeline metadata."""
        rec: dict[str, Any] = {
            "weights": str(self.weights.resolve()) if self.weights else getattr(self._upscaler, "source", None),
            "dtype": self.dtype,
            "codec": self.codec,
        }
        # the file's encoding is part of what a cached output is; left out when unset so
        # that outputs rendered before these options existed stay current
        rec.update(self.encoding)
        rec.update({k: str(v) for k, v in self.load_options.items()})
        if self.scenes != "none":  # another picture at the cuts; absent otherwise, so older outputs stay current
            rec["scenes"] = self.scenes
        return rec

    def _get_upscaler(self, vae: str | None) -> Any:
        if self._vae == "given":
            return self._upscaler
        want = vae or "3d"
        if self._upscaler is None or self._vae != want:
            from uav import VideoUpscaler  # heavy (torch); only a real render needs it

            self._upscaler = None  # free the previous model before loading the next
            self._upscaler = VideoUpscaler.from_pretrained(
                self.weights, device=self.device, dtype=self.dtype, vae=want, **self.load_options
            )
            self._vae = want
        return self._upscaler

    def __call__(
        self,
        job: RenderJob,
        settings: Mapping[str, Any],
        output_path: Path,
        progress: Callable[[int, int], None] | None = None,
        *,
        events: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """Render ``job`` with ``settings`` into ``output_path`` (atomically).

        ``progress(frames_done, frames_total)`` counts written frames; ``events``, when
        given, receives every raw ``VideoUpscaler`` progress event (flow, denoise,
        decode), e.g. :class:`uav.cli.common.ProgressReporter`.
        """
        upscaler = self._get_upscaler(settings.get("vae"))
        pipeline_settings = to_upscale_settings(settings)
        done = {"frames": 0}

        def callback(info: Mapping[str, Any]) -> None:
            if events is not None:
                events(info)
            if progress is not None and info.get("stage") == "decode" and info.get("tile", 0) == 0:
                done["frames"] += int(info.get("frames", 0))
                progress(min(done["frames"], job.frames), job.frames)

        options: dict[str, Any] = {"codec": self.codec, "timecode": job.timecode,
                                   "provenance": {"source": _source_record(job)}, **self.encoding}
        from uav.io.codecs import CODECS

        if self.codec in CODECS and CODECS[self.codec].kind == "sequence":
            options.update(start_number=output_start_number(job), replace=True)
        # VideoWriter writes under a temporary name and renames when complete: the
        # output appears atomically without a second temporary around it
        if job.media.kind == "image_sequence":
            options["fps"] = job.fps
            upscaler.upscale(_read_sequence(job), output=output_path, settings=pipeline_settings,
                             callback=callback, writer_options=options)
        elif self.scenes == "auto":
            from uav.scenes.run import upscale_scenes

            upscale_scenes(upscaler, str(job.media.path), output_path, settings=pipeline_settings,
                           writer_options=options, start=job.first_index, end=job.end_index, callback=callback)
        else:
            # a file input brings its own fps and audio (cut to the same frames)
            upscaler.upscale(str(job.media.path), output=output_path, settings=pipeline_settings, callback=callback,
                             writer_options=options, start=job.first_index, end=job.end_index)

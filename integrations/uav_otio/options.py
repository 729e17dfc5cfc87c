"""The options ``uav timeline plan`` and ``uav timeline upscale`` share: how to read the
timeline and how to plan it, declared once and handed to a command as one
:class:`PlanningOptions`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Any, Optional

import typer

from uav.cli.options import with_option_group

from .jobs import DEFAULT_HANDLES
from .params import Planning, Reading
from .timeline_files import parse_adapter_options

__all__ = ["InputArg", "PlanningOptions", "with_planning_options"]

MODEL = "Model and output"
PLAN = "Planning"

InputArg = Annotated[Path, typer.Argument(help="Timeline to read (.otio, .otioz, .xml, .edl, .aaf, ...).")]
HandlesOpt = Annotated[
    int, typer.Option("--handles", min=0, help="Frames added before and after every used range.", rich_help_panel=PLAN)
]
ShotsOpt = Annotated[
    Optional[Path],
    typer.Option("--shots", help="TOML shot list: shot tables matched by clip name, marker name or media file.",
                 rich_help_panel=PLAN),
]
NameByOpt = Annotated[
    str, typer.Option("--name-by", help="Name outputs after the 'media' file or the 'clip'.", rich_help_panel=PLAN)
]
ExtOpt = Annotated[str, typer.Option("--ext", help="Output file extension.", rich_help_panel=MODEL)]
TimelineNameOpt = Annotated[
    Optional[str],
    typer.Option("--timeline", "--timeline-name", metavar="NAME",
                 help="Timeline to use when the file holds several (an AAF with several top-level sequences, an .otio "
                      "collection).", rich_help_panel=PLAN),
]
AdapterOpt = Annotated[Optional[str], typer.Option(
    "--adapter", help="OpenTimelineIO adapter to read the file with (default: from its suffix).",
    rich_help_panel=PLAN)]
RateOpt = Annotated[Optional[str], typer.Option(
    "--rate", help="Frame rate of an EDL (EDLs carry none; 24 is assumed otherwise, 29.97 for FCM: DROP FRAME): "
                   "25, 30000/1001, or 29.97 / 23.976 / 59.94 (read as the NTSC rates).", metavar="RATE",
    rich_help_panel=PLAN)]
AdapterOptionOpt = Annotated[Optional[list[str]], typer.Option(
    "--adapter-option", help="KEY=VALUE passed to the adapter's reader (repeatable), e.g. "
                             "ignore_timecode_mismatch=true.", rich_help_panel=PLAN)]
SearchPathOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--search-path", help="Folder to look for offline media in (recursively), by file name, then by "
                                       "reel name and timecode. Repeatable.", rich_help_panel=PLAN),
]


@dataclasses.dataclass(frozen=True)
class PlanningOptions:
    """How a command reads and plans the timeline: one field per option, the field's
    annotation declaring the option (so the two commands cannot drift apart)."""

    handles: HandlesOpt = DEFAULT_HANDLES
    shots: ShotsOpt = None
    name_by: NameByOpt = "media"
    ext: ExtOpt = "mov"
    timeline_name: TimelineNameOpt = None
    adapter: AdapterOpt = None
    rate: RateOpt = None
    adapter_option: AdapterOptionOpt = None
    search_path: SearchPathOpt = None

    def reading(self) -> Reading:
        """How these options read the timeline file (raises ``ValueError`` for a malformed
        ``--adapter-option``)."""
        return Reading(timeline_name=self.timeline_name, adapter_name=self.adapter, rate=self.rate,
                       adapter_options=parse_adapter_options(self.adapter_option))

    def planning(self, overrides: Mapping[str, Any] | None, codec: str | None = None) -> Planning:
        """What these options plan; an image-sequence ``codec`` names folders (no extension)."""
        from uav.io.codecs import CODECS

        ext = "" if codec in CODECS and CODECS[codec].kind == "sequence" else self.ext
        return Planning(handles=self.handles, shots=self.shots, overrides=overrides, name_by=self.name_by, ext=ext,
                        search_paths=self.search_path)


#: gives a command every :class:`PlanningOptions` option, as one ``planning`` argument
with_planning_options = with_option_group(PlanningOptions, "planning")

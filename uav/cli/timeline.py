"""``uav timeline``: the OpenTimelineIO integration's sub-commands (see :mod:`uav_otio.cli`)."""
from uav.cli.app import app
from uav_otio.cli import app as timeline_app

app.add_typer(timeline_app, name="timeline")

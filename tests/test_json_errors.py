"""Every ``--json`` error of the core commands is one JSON document on stdout, saying what
the ``error:`` line on stderr says (issue #23 item 9)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import uav.cli
from uav.cli.app import app

uav.cli._load_commands()

CASES = {
    "upscale, missing input": ["upscale", "{tmp}/nope.mp4", "--self-check"],
    "upscale, bad option": ["upscale", "{tmp}/nope.mp4", "--steps", "nan"],
    "upscale, unknown flag": ["upscale", "{tmp}/nope.mp4", "--bogus"],
    "upscale, dry run of a pipe": ["upscale", "{tmp}/pipe.mp4", "--self-check", "--dry-run"],
    "weights verify, missing folder": ["weights", "verify", "{tmp}/nothing"],
    "weights convert, missing folder": ["weights", "convert", "{tmp}/nothing"],
    "doctor --memory, missing input": ["doctor", "--memory", "{tmp}/nope.mp4"],
    "caption, missing input": ["caption", "{tmp}/nope.mp4"],
    "eval, missing input": ["eval", "{tmp}/nope.mp4", "--ref", "{tmp}/ref.mp4"],
    "compare, missing input": ["compare", "{tmp}/nope.mp4", "--ref", "{tmp}/ref.mp4"],
    "plugins, unknown flag": ["plugins", "--bogus"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_json_errors_are_one_document_on_stdout(case, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.mp4")
    args = [a.format(tmp=tmp_path) for a in CASES[case]] + ["--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout)  # the whole of stdout is one document
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert doc["ok"] is False and errors == [f"error: {doc['error']}"]
    for words in ("Traceback", "not enough values to unpack", "cannot convert float NaN"):
        assert words not in res.output


def test_uav_user_errors_exit_2_with_their_message():
    """handle_errors reports uav's own error types as user errors (one line, exit 2)."""
    import typer

    from uav.cli.common import UserError, handle_errors
    from uav.frames import InputError
    from uav.io.errors import VideoInputError
    from uav.settings import ComponentError, SettingsError
    from uav.weights import ReleaseError

    for error in (UserError("u"), SettingsError("s"), ComponentError("c"), ReleaseError("r"), InputError("i"),
                  VideoInputError("v.mp4", "unreadable")):
        with pytest.raises(typer.Exit) as exit_info, handle_errors():
            raise error
        assert exit_info.value.exit_code == 2, type(error).__name__

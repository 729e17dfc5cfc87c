"""The option checks ``uav upscale`` and ``uav timeline upscale`` share (``uav.cli.preflight``)."""

from __future__ import annotations

import pytest

from uav.cli.common import UserError
from uav.cli.preflight import check_vae, codec_spec, parse_dtype


def test_dtype_auto_is_none_and_names_pass_through():
    assert parse_dtype("auto") is None
    assert [parse_dtype(d) for d in ("fp32", "fp16", "bf16")] == ["fp32", "fp16", "bf16"]


def test_dtype_aliases_only_where_a_command_accepts_them():
    aliases = {"float16": "fp16"}
    assert parse_dtype("float16", aliases) == "fp16"
    with pytest.raises(UserError, match=r"^--dtype: expected auto, fp32, fp16 or bf16, got 'float16'$"):
        parse_dtype("float16")


def test_vae_and_codec_refusals_read_as_one_line():
    assert check_vae("video") == "video"
    with pytest.raises(UserError, match=r"^--vae: expected 3d or video, got '2d'$"):
        check_vae("2d")
    assert codec_spec("png").kind == "sequence"
    with pytest.raises(UserError, match=r"^--codec: unknown codec 'h266'; choose one of h264, "):
        codec_spec("h266")

"""The options ``uav upscale``, ``uav timeline upscale`` and ``uav timeline plan`` share, declared once.

The pipeline knobs are generated from :class:`uav.settings.UpscaleSettings`' fields
(their help, metavar and default come from each field's :class:`~uav.settings.Knob`)
by :func:`with_setting_options`, which adds them to a command's signature and hands
the command one ``setting_values`` dict of what was typed. Every value arrives as text
and is read once by :meth:`UpscaleSettings.from_strings`, so a bad value reads the same
in every command and names its option (``--noise-level must be an integer in [0, 350],
got '1.5'``); :func:`settings_from_options` then resolves the component names through
:mod:`uav.components` before anything loads.

The model, encoding and reporting options are ``Annotated`` aliases; those ``uav
upscale`` and ``uav timeline upscale`` both take are the fields of :class:`RunOptions`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from uav.cli.common import UserError
from uav.settings import ComponentError, SettingsError, UpscaleSettings

F = TypeVar("F", bound=Callable[..., Any])

SAMPLING = "Sampling"
TILING = "Tiling and memory"
MODEL = "Model and output"
REPORTING = "Reporting"
EXECUTOR = "Executor"

#: settings field -> command-line flag, in the order ``--help`` lists them: the field's name
#: with dashes, but for two flags that read better short
SETTING_FLAGS: dict[str, str] = {
    field: {"num_inference_steps": "--steps", "memory": "--vram"}.get(field, "--" + field.replace("_", "-"))
    for field in ("prompt", "captioner", "caption_frame", "negative_prompt", "added_prompt", "noise_level",
                  "guidance_scale", "num_inference_steps", "propagation_steps", "color_fix", "flow", "seed",
                  "scheduler", "tile", "tiling", "tile_mode", "tile_size", "tile_overlap", "window_batch",
                  "decode_chunk", "decode_tile", "decode_overlap", "memory", "preset", "step_cache",
                  "step_cache_interval", "guidance_reuse_from", "compile")}
_TILING_FIELDS = ("tile", "tiling", "tile_mode", "tile_size", "tile_overlap", "window_batch", "decode_chunk",
                  "decode_tile", "decode_overlap", "memory", "compile")
#: what ``--help`` shows as the default where the field's own value would not read well
_DEFAULT_TEXT = {"caption_frame": "first", "propagation_steps": "none", "color_fix": "none", "tile": "auto", "decode_tile": "whole frames",
                 "seed": "random", "compile": "auto", "guidance_reuse_from": "never"}


def param_name(field: str) -> str:
    """The Python parameter (and JSON) name of a setting's option: the flag without dashes."""
    return SETTING_FLAGS[field].lstrip("-").replace("-", "_")


def _default_text(field: str) -> str:
    if field in _DEFAULT_TEXT:
        return _DEFAULT_TEXT[field]
    value = getattr(UpscaleSettings(), field)
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) and field.endswith("prompt") else str(value)


def _setting_parameter(field: str, panels: Mapping[str, str], default_text: Mapping[str, str]) -> inspect.Parameter:
    rule = UpscaleSettings.knob(field)
    panel = panels.get("tiling" if field in _TILING_FIELDS else "sampling", SAMPLING)
    default = "" if field == "prompt" else f" \\[default: {default_text.get(field) or _default_text(field)}]"
    option = typer.Option(SETTING_FLAGS[field], help=f"{rule.help}{default}", metavar=rule.metavar or "TEXT",
                          show_default=False, rich_help_panel=panel)
    return inspect.Parameter(param_name(field), inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[str], option])


def with_setting_options(*, sampling: str = SAMPLING, tiling: str = TILING,
                         default_text: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Add an option for every field of :data:`SETTING_FLAGS` to a typer command.

    The command takes a ``setting_values`` keyword instead: field -> the text typed,
    or ``None`` when the option was not given. ``sampling`` and ``tiling`` name the
    help panels the options appear under; ``default_text`` overrides the default a
    field's help shows, for a command whose default differs (a timeline's ``seed``).
    """
    panels = {"sampling": sampling, "tiling": tiling}

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "setting_values"]
        added = [_setting_parameter(field, panels, default_text or {}) for field in SETTING_FLAGS]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {field: kwargs.pop(param_name(field)) for field in SETTING_FLAGS}
            return fn(**kwargs, setting_values=values)

        params = own + added
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate


def with_option_group(group: type, keyword: str, *, after: str | None = None) -> Callable[[F], F]:
    """Add an option for every field of the dataclass ``group`` (each field's annotation
    declares its option) to a typer command, which takes them as one ``keyword``
    argument holding a ``group`` instead.

    The options go right after the command's parameter ``after`` (default: after its
    required parameters): typer reads options from the signature and the help shows its
    panels in the order their first option comes, so a command keeps the help it had
    when it listed them there itself.
    """
    hints = typing.get_type_hints(group, include_extras=True)
    fields = dataclasses.fields(group)

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != keyword]
        at = [p.name for p in own].index(after) + 1 if after else next(
            (i for i, p in enumerate(own) if p.default is not inspect.Parameter.empty
             or p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD), len(own))
        added = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[f.name],
                                   default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
                 for f in fields]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = group(**{f.name: kwargs.pop(f.name) for f in fields})
            return fn(**kwargs, **{keyword: values})

        params = own[:at] + added + own[at:]
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate


def option_message(exc: SettingsError) -> str:
    """A settings error reworded to name the command-line option it came from."""
    flag = SETTING_FLAGS.get(exc.field or "")
    text = str(exc)
    if flag is None or text.startswith(flag):
        return text
    if isinstance(exc, ComponentError):
        return f"{flag}: {exc.reason}"
    return f"{flag}: {text}"


def settings_from_options(values: Mapping[str, Any], captioner_options: list[str] | None = None) -> UpscaleSettings:
    """The :class:`UpscaleSettings` the command line asks for (options not given keep their
    defaults); every value and every component name is checked. ``captioner_options`` are
    the ``--captioner-option KEY=VALUE`` items.

    Raises:
        SettingsError: naming the option at fault.
        uav.captioning.CaptionError: a malformed ``--captioner-option``.
    """
    from uav.components import check_components

    given = {field: value for field, value in values.items() if value is not None}
    if captioner_options:
        from uav.captioning import parse_captioner_options

        given["captioner_options"] = parse_captioner_options(captioner_options)
    try:
        settings = UpscaleSettings.from_strings(given, labels=SETTING_FLAGS)
        check_components(settings)
        return settings
    except SettingsError as exc:
        raise SettingsError(option_message(exc), field=exc.field) from None


# ---------------------------------------------------------------------------- shared by the commands
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="Release folder (pretrained_models/upscale_a_video layout). Default: $UAV_WEIGHTS, "
                      "./pretrained_models/upscale_a_video, ~/.cache/uav/upscale_a_video.",
    metavar="DIR", rich_help_panel=MODEL)]
VaeOpt = Annotated[Optional[str], typer.Option(
    "--vae", help="Decoder: 3d (published default) or video (temporal, LR-conditioned).", metavar="3d|video",
    rich_help_panel=MODEL)]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (CUDA if available), cpu, cuda, cuda:N or mps.", metavar="DEVICE",
    rich_help_panel=MODEL)]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="U-Net/text-encoder precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.",
    metavar="DTYPE", rich_help_panel=MODEL)]
# flags take no value: an empty metavar keeps --help free of a type tag for them
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.", metavar="",
                                        rich_help_panel=REPORTING)]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options ``uav upscale`` and ``uav timeline upscale`` share, declared once: the
    encoder's, the reporting flags, the executor's and ``--captioner-option``. Each
    field's annotation is its option; :data:`with_run_options` adds them to a command."""

    pix_fmt: Annotated[Optional[str], typer.Option(
        "--pix-fmt", help="Encoder pixel format, e.g. yuv420p10le (default depends on the codec).", metavar="FMT",
        rich_help_panel=MODEL)] = None
    crf: Annotated[Optional[int], typer.Option(
        "--crf", help="h264/h265 quality, 0 (lossless) to 51 (default 18 / 20).", metavar="0-51",
        rich_help_panel=MODEL)] = None
    compression: Annotated[Optional[str], typer.Option(
        "--compression", help="EXR compression: piz (default), zip, dwaa or none.", metavar="NAME",
        rich_help_panel=MODEL)] = None
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary; errors only.",
                                        metavar="", rich_help_panel=REPORTING)] = False
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON summary on stdout (progress stays on stderr).", metavar="",
        rich_help_panel=REPORTING)] = False
    debug: DebugOpt = False
    executor: Annotated[str, typer.Option(
        "--executor", help="Who renders the jobs: local (this process, one after another) or ray (Ray actors on this "
                           "machine or a cluster; pip install 'uav\\[ray]').", rich_help_panel=EXECUTOR)] = "local"
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="Ray cluster to join: auto (the one this machine belongs to) or HOST:PORT / "
                              "ray://HOST:10001. Default: start a local cluster for the run.",
        rich_help_panel=EXECUTOR)] = None
    gpus_per_worker: Annotated[Optional[float], typer.Option(
        "--gpus-per-worker", help="GPUs each Ray worker reserves (default 1 when the cluster has GPUs, else 0).",
        rich_help_panel=EXECUTOR)] = None
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="Ray workers, each loading the model once (default: one per --gpus-per-worker GPUs, or 1).",
        rich_help_panel=EXECUTOR)] = None
    captioner_option: Annotated[Optional[list[str]], typer.Option(
        "--captioner-option", metavar="KEY=VALUE",
        help="An option of the --prompt auto captioner, repeatable: model=DIR (its local folder), device=..., "
             "dtype=..., instruction=TEXT, max_new_tokens=N.", rich_help_panel=SAMPLING)] = None

    def build_executor(self, *, always: bool = False) -> Any:
        """The executor the options ask for; ``None`` for ``local`` (the command's own loop)
        unless ``always`` (a run that needs the executor path, e.g. a temporal split).
        Nothing imports Ray before :func:`uav.executors.make_executor` does, for ``ray``.

        Raises:
            UserError: an unknown executor, cluster options without ``ray``, bad numbers,
                or Ray not installed (one line naming ``uav[ray]``).
        """
        from uav.executors import ExecutorError, make_executor

        address = None if self.ray_address in (None, "", "local") else self.ray_address
        try:
            made = make_executor(self.executor, address=address, workers=self.workers,
                                 gpus_per_worker=self.gpus_per_worker, debug=self.debug)
        except ExecutorError as exc:
            raise UserError(str(exc)) from None
        return None if self.executor == "local" and not always else made


#: gives ``uav upscale`` and ``uav timeline upscale`` every :class:`RunOptions` option, as one
#: ``options`` argument, after their ``--codec`` (where each listed them itself before)
with_run_options = with_option_group(RunOptions, "options", after="codec")

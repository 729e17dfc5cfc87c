"""``uav train unet`` and ``uav train vae``: the paper's two fine-tuning stages (see ``docs/training.md``).

Both commands run unchanged under ``accelerate launch`` (``accelerate launch -m uav.train
unet ...``): accelerate's environment decides the devices and processes. Bad input (an
empty folder, an unreadable or too short clip, a bad option) prints one ``error:`` line
and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from uav.cli.common import command_group, handle_errors, quiet_libraries
from uav.train.config import TrainConfig

train_app = command_group(
    "train", "Fine-tune on your own footage: stage 1 (U-Net temporal layers) and stage 2 (video VAE decoder).")

_DATA = "Data"
_OPT = "Optimisation"
_RUN = "Checkpoints, validation, logging"


def _panel(panel: str, **options: Any) -> dict[str, Any]:
    """``options`` (parameter name -> typer option) listed under ``panel`` in ``--help``."""
    for info in options.values():
        info.rich_help_panel = panel
    return options


#: the options both stages take, in ``--help`` order: those before a stage's own (data and
#: optimisation), then those after them (checkpoints, validation, logging). Each is a
#: :class:`~uav.train.TrainConfig` field whose name, type and default the option takes,
#: except ``--cpu`` (``device="cpu"``) and ``--debug``.
_BEFORE: dict[str, Any] = {
    "data": typer.Argument(help="Folder of HQ clips: video files (.mp4, .mov ...) or folders of images.",
                           show_default=False),
    "output": typer.Option("--output", "-o", help="Run folder: checkpoints/, log.jsonl and, at the end, release/ "
                           "(official layout).", show_default=False),
    "init": typer.Option(help="Start from a release folder (official layout) or the image SD x4 upscaler folder "
                         "(diffusers layout; its U-Net is inflated to video).", show_default=False),
    **_panel(
        _DATA,
        captions=typer.Option(help="Captions in one JSON ({\"clip\": \"text\"}) or CSV (clip,caption) file. "
                              "Default: a sidecar <clip>.txt where present, else the empty prompt."),
        degradations=typer.Option(help="TOML degradation recipe (tables mirror uav.eval.degrade.DegradationConfig). "
                                  "Default: the documented RealBasicVSR-style recipe."),
        frames=typer.Option(min=1, help="Frames per training window."),
        stride=typer.Option(min=1, help="Frames between the starts of two windows of a clip."),
        crop=typer.Option(min=8, help="Low-res crop side in pixels (multiple of 8); the HQ crop is 4x this."),
        num_workers=typer.Option(min=0, help="Data-loading worker processes (PyAV decode + degradation)."),
        cache_latents=typer.Option(help="Cache the frozen VAE's HQ latents on disk (output/latent_cache)."),
    ),
    **_panel(
        _OPT,
        steps=typer.Option(min=1, help="Optimizer steps in total."),
        batch_size=typer.Option(min=1, help="Clips per process and micro-step."),
        grad_accum=typer.Option(min=1, help="Micro-steps per optimizer step (gradient accumulation)."),
        lr=typer.Option(help="Peak learning rate (AdamW)."),
        warmup_steps=typer.Option(min=0, help="Linear learning-rate warm-up steps."),
        lr_schedule=typer.Option(help="After warm-up: constant or cosine (to 0 at --steps)."),
        weight_decay=typer.Option(min=0.0, help="AdamW weight decay."),
        max_grad_norm=typer.Option(min=0.0, help="Gradient clipping norm (0 = off)."),
        mixed_precision=typer.Option(help="no, fp16 or bf16 (autocast; trained weights stay fp32)."),
        gradient_checkpointing=typer.Option(help="Recompute block activations in the backward pass (less memory, "
                                            "~30% slower)."),
        ema_decay=typer.Option(help="EMA decay of the trained weights, in [0, 1) (0 = off); the release holds the "
                               "EMA weights."),
        seed=typer.Option(min=0, help="Seed of data order, crops, degradations, timesteps and noise."),
        cpu=typer.Option("--cpu", help="Train on the CPU even when a GPU is present."),
    ),
}
_AFTER: dict[str, Any] = _panel(
    _RUN,
    checkpoint_every=typer.Option(min=1, help="Optimizer steps between checkpoints."),
    keep_checkpoints=typer.Option(min=1, help="Newest checkpoints kept."),
    resume=typer.Option(help="Continue from the newest checkpoint in --output (--no-resume deletes them and starts "
                        "over)."),
    validate_every=typer.Option(min=0, help="Steps between validations that upscale the held-out clip "
                                "(PSNR/SSIM/E*warp); 0 = only the evaluation loss, at the start and end."),
    validation_clip=typer.Option(help="Held-out HQ clip for validation (default: the first data clip)."),
    validation_inference_steps=typer.Option(min=1, help="DDIM steps of the validation upscale."),
    eval_samples=typer.Option(min=0, help="Windows in the fixed evaluation set whose loss is logged at each "
                              "validation."),
    progress=typer.Option(help="Rich progress bar on stderr."),
    debug=typer.Option("--debug", help="Show tracebacks and library logs."),
)


def _parameters(options: dict[str, Any]) -> list[inspect.Parameter]:
    """The command parameters of ``options``: each takes its :class:`TrainConfig` field's type
    and default (``--cpu`` and ``--debug`` are flags, off by default)."""
    types = typing.get_type_hints(TrainConfig) | {"cpu": bool, "debug": bool}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | {"cpu": False, "debug": False}
    return [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[types[name], info],
                              default=inspect.Parameter.empty if defaults[name] is dataclasses.MISSING
                              else defaults[name])
            for name, info in options.items()]


def stage_command(stage: str, own: dict[str, Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Make a function (whose docstring is the help) into the command that trains ``stage``.

    The command's options, which typer reads from its signature, are :data:`_BEFORE`, the
    stage's ``own`` (declared like them), then :data:`_AFTER`, so ``--help`` lists them in
    that order in every stage. It trains with every option as a :class:`~uav.train.TrainConfig`
    field (``--cpu`` becomes ``device="cpu"``); the decorated function's body is not run.
    """

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        params = _parameters(_BEFORE | own | _AFTER)

        @functools.wraps(fn)
        def command(**fields: Any) -> None:
            debug = fields.pop("debug")
            fields["device"] = "cpu" if fields.pop("cpu") else None
            _run(stage, fields, debug)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _run(stage: str, fields: dict[str, Any], debug: bool) -> None:
    with handle_errors(debug=debug):
        quiet_libraries(debug)
        from uav.train import train

        config = TrainConfig(**fields)
        result = train(stage, config)
        if result.release is not None:
            typer.echo(f"{stage} stage: {result.steps} steps; release written to {result.release}", err=True)


@train_app.command("unet")
@stage_command("unet", _panel(
    _OPT,
    prompt_dropout=typer.Option(help="Probability of training on the empty prompt (keeps classifier-free guidance "
                                "working)."),
    max_noise_level=typer.Option(help="Noise-level augmentation of the low-res input draws levels in [0, this] "
                                 "(<= 350)."),
))
def unet() -> None:
    """Stage 1: train the U-Net's temporal layers (spatial layers frozen), v-prediction loss."""


@train_app.command("vae")
@stage_command("vae", _panel(
    _OPT,
    perceptual_weight=typer.Option(min=0.0, help="Weight of the perceptual term (LPIPS when installed, else the "
                                   "structure loss)."),
))
def vae() -> None:
    """Stage 2: fine-tune the video VAE decoder's temporal and SFT parts (encoder and the rest frozen)."""


def main() -> None:
    """``python -m uav.train`` / ``accelerate launch -m uav.train``: the train commands on their own."""
    train_app(prog_name="uav train")


from uav.cli.app import app  # noqa: E402  (attached last, like every sub-command module)

app.add_typer(train_app, name="train")

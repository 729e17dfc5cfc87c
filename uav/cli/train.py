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

#: the options both stages take, in ``--help`` order: those before a stage's own (data and
#: optimisation), then those after them (checkpoints, validation, logging). Each is a
#: :class:`~uav.train.TrainConfig` field whose type and default the option takes, except
#: ``--cpu`` (``device="cpu"``) and ``--debug``.
_BEFORE: dict[str, Any] = {
    "data": typer.Argument(help="Folder of HQ clips: video files (.mp4, .mov ...) or folders of images.",
                           show_default=False),
    "output": typer.Option("--output", "-o", help="Run folder: checkpoints/, log.jsonl and, at the end, release/ "
                           "(official layout).", show_default=False),
    "init": typer.Option("--init", help="Start from a release folder (official layout) or the image SD x4 upscaler "
                         "folder (diffusers layout; its U-Net is inflated to video).", show_default=False),
    "captions": typer.Option("--captions", help="Captions in one JSON ({\"clip\": \"text\"}) or CSV (clip,caption) "
                             "file. Default: a sidecar <clip>.txt where present, else the empty prompt.",
                             rich_help_panel=_DATA),
    "degradations": typer.Option("--degradations", help="TOML degradation recipe (tables mirror "
                                 "uav.eval.degrade.DegradationConfig). Default: the documented RealBasicVSR-style "
                                 "recipe.", rich_help_panel=_DATA),
    "frames": typer.Option("--frames", min=1, help="Frames per training window.", rich_help_panel=_DATA),
    "stride": typer.Option("--stride", min=1, help="Frames between the starts of two windows of a clip.",
                           rich_help_panel=_DATA),
    "crop": typer.Option("--crop", min=8, help="Low-res crop side in pixels (multiple of 8); the HQ crop is 4x this.",
                         rich_help_panel=_DATA),
    "num_workers": typer.Option("--num-workers", min=0, help="Data-loading worker processes (PyAV decode + "
                                "degradation).", rich_help_panel=_DATA),
    "cache_latents": typer.Option("--cache-latents/--no-cache-latents", help="Cache the frozen VAE's HQ latents on "
                                  "disk (output/latent_cache).", rich_help_panel=_DATA),
    "steps": typer.Option("--steps", min=1, help="Optimizer steps in total.", rich_help_panel=_OPT),
    "batch_size": typer.Option("--batch-size", min=1, help="Clips per process and micro-step.", rich_help_panel=_OPT),
    "grad_accum": typer.Option("--grad-accum", min=1, help="Micro-steps per optimizer step (gradient accumulation).",
                               rich_help_panel=_OPT),
    "lr": typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=_OPT),
    "warmup_steps": typer.Option("--warmup-steps", min=0, help="Linear learning-rate warm-up steps.",
                                 rich_help_panel=_OPT),
    "lr_schedule": typer.Option("--lr-schedule", help="After warm-up: constant or cosine (to 0 at --steps).",
                                rich_help_panel=_OPT),
    "weight_decay": typer.Option("--weight-decay", min=0.0, help="AdamW weight decay.", rich_help_panel=_OPT),
    "max_grad_norm": typer.Option("--max-grad-norm", min=0.0, help="Gradient clipping norm (0 = off).",
                                  rich_help_panel=_OPT),
    "mixed_precision": typer.Option("--mixed-precision", help="no, fp16 or bf16 (autocast; trained weights stay "
                                    "fp32).", rich_help_panel=_OPT),
    "gradient_checkpointing": typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute "
                                           "block activations in the backward pass (less memory, ~30% slower).",
                                           rich_help_panel=_OPT),
    "ema_decay": typer.Option("--ema-decay", help="EMA decay of the trained weights, in [0, 1) (0 = off); the release "
                              "holds the EMA weights.", rich_help_panel=_OPT),
    "seed": typer.Option("--seed", min=0, help="Seed of data order, crops, degradations, timesteps and noise.",
                         rich_help_panel=_OPT),
    "cpu": typer.Option("--cpu", help="Train on the CPU even when a GPU is present.", rich_help_panel=_OPT),
}
_AFTER: dict[str, Any] = {
    "checkpoint_every": typer.Option("--checkpoint-every", min=1, help="Optimizer steps between checkpoints.",
                                     rich_help_panel=_RUN),
    "keep_checkpoints": typer.Option("--keep-checkpoints", min=1, help="Newest checkpoints kept.", rich_help_panel=_RUN),
    "resume": typer.Option("--resume/--no-resume", help="Continue from the newest checkpoint in --output (--no-resume "
                           "deletes them and starts over).", rich_help_panel=_RUN),
    "validate_every": typer.Option("--validate-every", min=0, help="Steps between validations that upscale the "
                                   "held-out clip (PSNR/SSIM/E*warp); 0 = only the evaluation loss, at the start and "
                                   "end.", rich_help_panel=_RUN),
    "validation_clip": typer.Option("--validation-clip", help="Held-out HQ clip for validation (default: the first "
                                    "data clip).", rich_help_panel=_RUN),
    "validation_inference_steps": typer.Option("--validation-inference-steps", min=1, help="DDIM steps of the "
                                               "validation upscale.", rich_help_panel=_RUN),
    "eval_samples": typer.Option("--eval-samples", min=0, help="Windows in the fixed evaluation set whose loss is "
                                 "logged at each validation.", rich_help_panel=_RUN),
    "progress": typer.Option("--progress/--no-progress", help="Rich progress bar on stderr.", rich_help_panel=_RUN),
    "debug": typer.Option("--debug", help="Show tracebacks and library logs.", rich_help_panel=_RUN),
}


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
@stage_command("unet", {
    "prompt_dropout": typer.Option("--prompt-dropout", help="Probability of training on the empty prompt (keeps "
                                   "classifier-free guidance working).", rich_help_panel=_OPT),
    "max_noise_level": typer.Option("--max-noise-level", help="Noise-level augmentation of the low-res input draws "
                                    "levels in [0, this] (<= 350).", rich_help_panel=_OPT),
})
def unet() -> None:
    """Stage 1: train the U-Net's temporal layers (spatial layers frozen), v-prediction loss."""


@train_app.command("vae")
@stage_command("vae", {
    "perceptual_weight": typer.Option("--perceptual-weight", min=0.0, help="Weight of the perceptual term (LPIPS "
                                      "when installed, else the structure loss).", rich_help_panel=_OPT),
})
def vae() -> None:
    """Stage 2: fine-tune the video VAE decoder's temporal and SFT parts (encoder and the rest frozen)."""


def main() -> None:
    """``python -m uav.train`` / ``accelerate launch -m uav.train``: the train commands on their own."""
    train_app(prog_name="uav train")


from uav.cli.app import app  # noqa: E402  (attached last, like every sub-command module)

app.add_typer(train_app, name="train")

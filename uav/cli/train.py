"""``uav train unet`` and ``uav train vae``: the paper's two fine-tuning stages (see ``docs/training.md``).

Both commands run unchanged under ``accelerate launch`` (``accelerate launch -m uav.train
unet ...``): accelerate's environment decides the devices and processes. Bad input (an
empty folder, an unreadable or too short clip, a bad option) prints one ``error:`` line
and exits with code 2.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uav.cli.common import command_group, handle_errors, quiet_libraries

train_app = command_group(
    "train", "Fine-tune on your own footage: stage 1 (U-Net temporal layers) and stage 2 (video VAE decoder).")

_DATA = "Data"
_OPT = "Optimisation"
_RUN = "Checkpoints, validation, logging"

DataArg = Annotated[Path, typer.Argument(help="Folder of HQ clips: video files (.mp4, .mov ...) or folders of images.",
                                         show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoints/, log.jsonl and, at the end, "
                                         "release/ (official layout).", show_default=False)]
InitOpt = Annotated[Path, typer.Option("--init", help="Start from a release folder (official layout) or the image SD "
                                       "x4 upscaler folder (diffusers layout; its U-Net is inflated to video).",
                                       show_default=False)]
CaptionsOpt = Annotated[Optional[Path], typer.Option(
    "--captions", help="Captions in one JSON ({\"clip\": \"text\"}) or CSV (clip,caption) file. Default: a sidecar "
    "<clip>.txt where present, else the empty prompt.", rich_help_panel=_DATA)]
DegradationsOpt = Annotated[Optional[Path], typer.Option(
    "--degradations", help="TOML degradation recipe (tables mirror uav.eval.degrade.DegradationConfig). Default: the "
    "documented RealBasicVSR-style recipe.", rich_help_panel=_DATA)]
FramesOpt = Annotated[int, typer.Option("--frames", min=1, help="Frames per training window.", rich_help_panel=_DATA)]
StrideOpt = Annotated[int, typer.Option("--stride", min=1, help="Frames between the starts of two windows of a clip.",
                                        rich_help_panel=_DATA)]
CropOpt = Annotated[int, typer.Option("--crop", min=8, help="Low-res crop side in pixels (multiple of 8); the HQ crop "
                                      "is 4x this.", rich_help_panel=_DATA)]
WorkersOpt = Annotated[int, typer.Option("--num-workers", min=0, help="Data-loading worker processes (PyAV decode + "
                                         "degradation).", rich_help_panel=_DATA)]
CacheOpt = Annotated[bool, typer.Option("--cache-latents/--no-cache-latents", help="Cache the frozen VAE's HQ "
                                        "latents on disk (output/latent_cache).", rich_help_panel=_DATA)]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps in total.", rich_help_panel=_OPT)]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Clips per process and micro-step.",
                                       rich_help_panel=_OPT)]
AccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-steps per optimizer step (gradient "
                                       "accumulation).", rich_help_panel=_OPT)]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=_OPT)]
WarmupOpt = Annotated[int, typer.Option("--warmup-steps", min=0, help="Linear learning-rate warm-up steps.",
                                        rich_help_panel=_OPT)]
ScheduleOpt = Annotated[str, typer.Option("--lr-schedule", help="After warm-up: constant or cosine (to 0 at --steps).",
                                          rich_help_panel=_OPT)]
WdOpt = Annotated[float, typer.Option("--weight-decay", min=0.0, help="AdamW weight decay.", rich_help_panel=_OPT)]
ClipOpt = Annotated[float, typer.Option("--max-grad-norm", min=0.0, help="Gradient clipping norm (0 = off).",
                                        rich_help_panel=_OPT)]
PrecisionOpt = Annotated[str, typer.Option("--mixed-precision", help="no, fp16 or bf16 (autocast; trained weights "
                                           "stay fp32).", rich_help_panel=_OPT)]
GcOpt = Annotated[bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute block "
                                     "activations in the backward pass (less memory, ~30% slower).",
                                     rich_help_panel=_OPT)]
EmaOpt = Annotated[float, typer.Option("--ema-decay", help="EMA decay of the trained weights, in [0, 1) (0 = off); "
                                       "the release holds the EMA weights.", rich_help_panel=_OPT)]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of data order, crops, degradations, timesteps and "
                                      "noise.", rich_help_panel=_OPT)]
CpuOpt = Annotated[bool, typer.Option("--cpu", help="Train on the CPU even when a GPU is present.",
                                      rich_help_panel=_OPT)]
CkptOpt = Annotated[int, typer.Option("--checkpoint-every", min=1, help="Optimizer steps between checkpoints.",
                                      rich_help_panel=_RUN)]
KeepOpt = Annotated[int, typer.Option("--keep-checkpoints", min=1, help="Newest checkpoints kept.", rich_help_panel=_RUN)]
ResumeOpt = Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the newest checkpoint in "
                                         "--output (--no-resume deletes them and starts over).", rich_help_panel=_RUN)]
ValEveryOpt = Annotated[int, typer.Option("--validate-every", min=0, help="Steps between validations that upscale the "
                                          "held-out clip (PSNR/SSIM/E*warp); 0 = only the evaluation loss, at the "
                                          "start and end.", rich_help_panel=_RUN)]
ValClipOpt = Annotated[Optional[Path], typer.Option("--validation-clip", help="Held-out HQ clip for validation "
                                                    "(default: the first data clip).", rich_help_panel=_RUN)]
ValStepsOpt = Annotated[int, typer.Option("--validation-inference-steps", min=1, help="DDIM steps of the validation "
                                          "upscale.", rich_help_panel=_RUN)]
EvalOpt = Annotated[int, typer.Option("--eval-samples", min=0, help="Windows in the fixed evaluation set whose loss "
                                      "is logged at each validation.", rich_help_panel=_RUN)]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Rich progress bar on stderr.",
                                           rich_help_panel=_RUN)]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.", rich_help_panel=_RUN)]


def _shared_before(
    data: DataArg,
    output: OutputOpt,
    init: InitOpt,
    captions: CaptionsOpt = None,
    degradations: DegradationsOpt = None,
    frames: FramesOpt = 8,
    stride: StrideOpt = 4,
    crop: CropOpt = 64,
    num_workers: WorkersOpt = 2,
    cache_latents: CacheOpt = False,
    steps: StepsOpt = 1000,
    batch_size: BatchOpt = 1,
    grad_accum: AccumOpt = 1,
    lr: LrOpt = 5e-5,
    warmup_steps: WarmupOpt = 100,
    lr_schedule: ScheduleOpt = "constant",
    weight_decay: WdOpt = 0.0,
    max_grad_norm: ClipOpt = 1.0,
    mixed_precision: PrecisionOpt = "no",
    gradient_checkpointing: GcOpt = False,
    ema_decay: EmaOpt = 0.999,
    seed: SeedOpt = 0,
    cpu: CpuOpt = False,
) -> None:
    """The options both stages take before their own (data and optimisation); never called."""


def _shared_after(
    checkpoint_every: CkptOpt = 500,
    keep_checkpoints: KeepOpt = 2,
    resume: ResumeOpt = True,
    validate_every: ValEveryOpt = 0,
    validation_clip: ValClipOpt = None,
    validation_inference_steps: ValStepsOpt = 20,
    eval_samples: EvalOpt = 4,
    progress: ProgressOpt = True,
    debug: DebugOpt = False,
) -> None:
    """The options both stages take after their own (checkpoints, validation, logging); never called."""


def stage_command(stage: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Make a function that declares only a stage's own options into that stage's command.

    The command's signature, which typer reads, is the shared options of
    :func:`_shared_before`, the stage's own, then those of :func:`_shared_after`, so
    ``--help`` lists them in that order in every stage. The command trains ``stage``
    with every option as a :class:`~uav.train.TrainConfig` field (``--cpu`` becomes
    ``device="cpu"``); the decorated function's body is not run.
    """

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        params = [p for f in (_shared_before, fn, _shared_after)
                  for p in inspect.signature(f, eval_str=True).parameters.values()]

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
        from uav.train import TrainConfig, train

        config = TrainConfig(**fields)
        result = train(stage, config)
        if result.release is not None:
            typer.echo(f"{stage} stage: {result.steps} steps; release written to {result.release}", err=True)


@train_app.command("unet")
@stage_command("unet")
def unet(
    prompt_dropout: Annotated[float, typer.Option("--prompt-dropout", help="Probability of training on the empty "
                                                  "prompt (keeps classifier-free guidance working).",
                                                  rich_help_panel=_OPT)] = 0.1,
    max_noise_level: Annotated[int, typer.Option("--max-noise-level", help="Noise-level augmentation of the low-res "
                                                 "input draws levels in [0, this] (<= 350).",
                                                 rich_help_panel=_OPT)] = 350,
) -> None:
    """Stage 1: train the U-Net's temporal layers (spatial layers frozen), v-prediction loss."""


@train_app.command("vae")
@stage_command("vae")
def vae(
    perceptual_weight: Annotated[float, typer.Option("--perceptual-weight", min=0.0, help="Weight of the perceptual "
                                                     "term (LPIPS when installed, else the structure loss).",
                                                     rich_help_panel=_OPT)] = 0.1,
) -> None:
    """Stage 2: fine-tune the video VAE decoder's temporal and SFT parts (encoder and the rest frozen)."""


def main() -> None:
    """``python -m uav.train`` / ``accelerate launch -m uav.train``: the train commands on their own."""
    train_app(prog_name="uav train")


from uav.cli.app import app  # noqa: E402  (attached last, like every sub-command module)

app.add_typer(train_app, name="train")

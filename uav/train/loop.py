"""The training loop both stages share, on Hugging Face ``accelerate``.

The same code runs on one CPU, one GPU, or many under ``accelerate launch`` (DDP):
:class:`accelerate.Accelerator` reads the launcher's environment. What the loop adds:

* only the stage's trained parameters are in the (AdamW) optimizer; the rest is frozen;
* mixed precision (accelerate's autocast), optional gradient checkpointing, gradient
  accumulation (no gradient all-reduce on the micro-steps before the last);
* linear learning-rate warm-up, then constant or cosine;
* an EMA of the trained weights (the release is written from it);
* resumable, atomic checkpoints (:mod:`uav.train.checkpoints`): a run restarted with the
  same ``--output`` continues from the newest one (weights, optimizer, scheduler, EMA,
  RNG, data position) and its next losses equal an uninterrupted run's;
* a JSON log, one line per event (``output/log.jsonl``), and rich progress on stderr;
* validation every N steps (:mod:`uav.train.validation`); a release folder at the end.

Every random draw of step ``s`` comes from a generator seeded by (seed, s, micro-step,
rank), and sample ``g`` of the data stream from (seed, g): that is what makes a resumed
run repeat an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from uav.train import checkpoints as ckpts
from uav.train.config import TrainConfig, TrainConfigError, load_degradation_config
from uav.train.data import WindowDataset, find_clips, load_captions, make_loader
from uav.train.stage import TrainingStage, enable_gradient_checkpointing
from uav.train.starting_point import StartingPoint, load_starting_point, write_release

LOG_FILE = "log.jsonl"
RELEASE_DIR = "release"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    """What a finished run produced."""

    release: Path | None
    steps: int
    resumed_from: int
    losses: list[float]
    log: Path


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of the generator behind every random draw of one micro-step."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class JsonLog:
    """Appends one JSON object per line; on resume, drops the lines past the checkpoint's step."""

    def __init__(self, path: Path, *, enabled: bool, keep_through: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_through is not None and path.is_file():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:  # the line being written when the run was killed
                    continue
                if int(doc.get("step", 0)) <= keep_through:
                    kept.append(line)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(k + "\n" for k in kept))
            os.replace(tmp, path)
        elif keep_through is None and path.exists():
            path.unlink()

    def write(self, **doc: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(doc, default=_json_default) + "\n")
                fh.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


class _Progress:
    """A rich progress bar on stderr (main process only)."""

    def __init__(self, enabled: bool, total: int, done: int, label: str) -> None:
        self.bar: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                            console=Console(stderr=True, highlight=False))
        self.task = self.bar.add_task(label, total=total, completed=done, info="")
        self.bar.start()

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def prepare_run(stage_name: str, config: TrainConfig) -> tuple[TrainConfig, WindowDataset, StartingPoint]:
    """Check the config and the data (cheap, before any model is loaded), then load the starting point."""
    config.validate()
    captions = load_captions(config.captions) if config.captions is not None else None
    clips = find_clips(config.data, frames=config.frames, crop=config.crop, captions=captions)
    degradation = load_degradation_config(config.degradations)
    if config.validation_clip is not None:
        check_validation_clip(config.validation_clip, config)
    dataset = WindowDataset(clips, frames=config.frames, stride=config.stride, crop=config.crop,
                            degradation=degradation, seed=config.seed)
    start = load_starting_point(config.init)
    return config, dataset, start


def check_validation_clip(path: Path, config: TrainConfig) -> None:
    """Check that the validation clip can be read and has at least one frame."""
    from uav.io import probe

    try:
        info = probe(path)
    except Exception as exc:
        raise TrainConfigError(f"validation_clip: cannot read {path}: {' '.join(str(exc).split())}") from None
    if info.num_frames < 1:
        raise TrainConfigError(f"validation_clip: {path} has no frames")
    if min(info.width, info.height) < 32:
        raise TrainConfigError(f"validation_clip: {path} is {info.width}x{info.height}; it needs at least 32x32 "
                               "pixels (one 8x8 low-res crop at x4)")


def make_stage(stage_name: str, start: StartingPoint, config: TrainConfig) -> TrainingStage:
    """The :class:`TrainingStage` for ``"unet"`` or ``"vae"``."""
    if stage_name == "unet":
        from uav.train.unet_stage import UNetStage

        return UNetStage(start, config)
    if stage_name == "vae":
        from uav.train.vae_stage import VAEStage

        return VAEStage(start, config)
    raise TrainConfigError(f"stage: expected 'unet' or 'vae', got {stage_name!r}")


def train(stage_name: str, config: TrainConfig, *, on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Run (or resume) one fine-tuning stage and write the release folder; see the module docstring.

    Args:
        stage_name: ``"unet"`` (stage 1) or ``"vae"`` (stage 2).
        config: the run's :class:`TrainConfig`.
        on_step: called on the main process after every optimizer step with the logged dict.
    """
    from accelerate import Accelerator

    config, dataset, start = prepare_run(stage_name, config)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.device == "cpu")
    torch.manual_seed(config.seed)  # initial global state; no loss draw depends on it
    run = _set_up(stage_name, config, start, accelerator)
    validator = None
    if run.main:
        from uav.train.validation import Validator

        validator = Validator(run.stage, dataset, config)
        if run.step == 0:
            _validate(validator, run, video=config.validate_every > 0)
    loader = make_loader(dataset, start=run.position, batch_size=config.batch_size, num_workers=config.num_workers,
                         rank=accelerator.process_index, world=run.world)
    batches = iter(loader)
    progress = _Progress(run.main and config.progress, config.steps, run.step, f"train {stage_name}")
    losses: list[float] = []
    try:
        while run.step < config.steps:
            record = _optimizer_step(run, batches, config)
            losses.append(record["loss"])
            progress.update(run.step, f"loss {record['loss']:.4f}")
            if on_step is not None and run.main:
                on_step(record)
            _after_step(run, stage_name, config, validator)
    finally:
        progress.close()
        del batches  # stop the data workers before anything else happens
    release_path = _release(run, stage_name, config, start)
    return TrainResult(release_path, run.step, run.resumed_from, losses, config.output / LOG_FILE)


@dataclass
class _Run:
    """One training run's parts and where it stands (``step``, ``position`` in samples)."""

    accelerator: Any
    stage: TrainingStage
    named: list[tuple[str, torch.nn.Parameter]]
    module: torch.nn.Module
    prepared: Any
    optimizer: Any
    scheduler: Any
    ema: ckpts.EMA | None
    log: JsonLog
    ckpt_root: Path
    step: int
    position: int
    resumed_from: int

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)


def _set_up(stage_name: str, config: TrainConfig, start: Any, accelerator: Any) -> _Run:
    """The stage, optimizer, schedule and EMA, restored from the last checkpoint when resuming."""
    main = accelerator.is_main_process
    stage = make_stage(stage_name, start, config)
    stage.to(accelerator.device)
    named = stage.trainable_parameters()
    module = stage.module.to(accelerator.device)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(stage.checkpoint_modules())
    optimizer = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
    # stepped by hand once per optimizer step: accelerate's scheduler wrapper steps it once per process
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup=config.warmup_steps, total=config.steps, schedule=config.lr_schedule))
    ema = ckpts.EMA(named, config.ema_decay) if config.ema_decay > 0 else None
    ckpt_root = config.output / CHECKPOINT_DIR
    step, position = 0, 0
    found = ckpts.latest_checkpoint(ckpt_root) if config.resume else None
    if found is not None:
        step, position = _restore(found, stage_name, named, optimizer, scheduler, ema, config)
    elif main and ckpt_root.is_dir() and not config.resume:
        import shutil

        shutil.rmtree(ckpt_root)
    accelerator.wait_for_everyone()
    prepared, optimizer = accelerator.prepare(module, optimizer)
    log = JsonLog(config.output / LOG_FILE, enabled=main, keep_through=step if found is not None else None)
    if found is not None:
        log.write(event="resume", step=step, samples=position, checkpoint=found.path.name)
    else:
        log.write(event="start", step=0, stage=stage_name, world_size=accelerator.num_processes,
                  trained_parameters=len(named), trained_numel=sum(p.numel() for _, p in named),
                  config=config.to_dict())
    return _Run(accelerator, stage, named, module, prepared, optimizer, scheduler, ema, log, ckpt_root, step,
                position, step)


def _optimizer_step(run: _Run, batches: Any, config: TrainConfig) -> dict[str, Any]:
    """One optimizer step over ``grad_accum`` micro-batches; its logged record."""
    accelerator, world = run.accelerator, run.world
    t0 = time.perf_counter()
    micro_losses = []
    for micro in range(config.grad_accum):
        batch = next(batches)
        generator = torch.Generator().manual_seed(step_seed(config.seed, run.step, micro,
                                                            accelerator.process_index))
        last = micro == config.grad_accum - 1
        sync = contextlib.nullcontext() if last or world == 1 else accelerator.no_sync(run.prepared)
        with sync:
            loss = run.stage.loss(run.prepared, batch, generator)
            accelerator.backward(loss / config.grad_accum)
        micro_losses.append(loss.detach().float())
    grad_norm = float(accelerator.clip_grad_norm_([p for _, p in run.named], config.max_grad_norm or math.inf))
    # a non-finite gradient (fp16 overflow, or a half-precision kernel's NaN) must not reach
    # the weights: the step is counted, its update dropped
    skipped = not math.isfinite(grad_norm)
    if not skipped:
        run.optimizer.step()
        if run.ema is not None:
            run.ema.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.position += config.grad_accum * config.batch_size * world
    mean_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"step {run.step}: the loss is {mean_loss}; lower --lr or use --mixed-precision "
                                 "no (the weights were not updated by non-finite gradients, so the cause is "
                                 "the forward pass)")
    record = {"event": "step", "step": run.step, "loss": mean_loss, "lr": run.scheduler.get_last_lr()[0],
              "seconds": round(time.perf_counter() - t0, 4), "samples": run.position}
    record["grad_norm"] = grad_norm if not skipped else None
    if skipped:
        record["skipped"] = True
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        record["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(accelerator.device) / 2**30, 3)
    run.log.write(**record)
    return record


def _after_step(run: _Run, stage_name: str, config: TrainConfig, validator: Any) -> None:
    """A checkpoint and a validation when their intervals (or the last step) come."""
    step = run.step
    if step % config.checkpoint_every == 0 or step == config.steps:
        run.accelerator.wait_for_everyone()
        if run.main:
            path = _save(run, stage_name, config)
            run.log.write(event="checkpoint", step=step, path=str(path))
    if validator is not None and (step == config.steps or (config.validate_every
                                                            and step % config.validate_every == 0)):
        _validate(validator, run, video=config.validate_every > 0)


def _release(run: _Run, stage_name: str, config: TrainConfig, start: Any) -> Path | None:
    """Write the release folder (EMA weights when kept) on the main process; its path."""
    release_path = None
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if run.main:
        trained = accelerator.unwrap_model(run.prepared)
        if run.ema is not None:
            run.ema.copy_to(run.named)  # the release carries the averaged weights
        unet, vaes = run.stage.release_models(trained)
        release_path = write_release(config.output / RELEASE_DIR, start, unet=unet, vaes=vaes, provenance={
            "stage": stage_name, "steps": run.step, "init": str(config.init), "ema": run.ema is not None,
            "config": config.to_dict(),
        })
        run.log.write(event="release", step=run.step, path=str(release_path))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return release_path


def _validate(validator: Any, run: _Run, *, video: bool) -> None:
    """Validate with the EMA weights when there are any (the weights the release will hold)."""
    stage, ema, named = run.stage, run.ema, run.named
    saved = None
    if ema is not None and ema.updates:
        saved = [p.detach().clone() for _, p in named]
        ema.copy_to(named)
    try:
        unet, vaes = stage.release_models(run.module)
        vae = vaes.get("video") if stage.name == "vae" else (vaes.get("3d") or vaes.get("video"))
        result = validator.run(run.module, unet, vae, video=video)
    finally:
        if saved is not None:
            with torch.no_grad():
                for (_, p), value in zip(named, saved):
                    p.copy_(value)
    run.log.write(event="validation", step=run.step, ema=saved is not None, **result)


def _save(run: _Run, stage_name: str, config: TrainConfig) -> Path:
    state = {"stage": stage_name, "samples": run.position, "seed": config.seed, "batch_size": config.batch_size,
             "grad_accum": config.grad_accum, "trained": [n for n, _ in run.named], "init": str(config.init)}
    return ckpts.save_checkpoint(run.ckpt_root, run.step, trained=dict(run.named), ema=run.ema,
                                 optimizer=run.optimizer, scheduler=run.scheduler, state=state,
                                 keep=config.keep_checkpoints)


def _restore(found: ckpts.Checkpoint, stage_name: str, named: list[tuple[str, torch.nn.Parameter]], optimizer: Any,
             scheduler: Any, ema: ckpts.EMA | None, config: TrainConfig) -> tuple[int, int]:
    state = found.state
    if state.get("stage") != stage_name:
        raise TrainConfigError(f"output: {config.output} holds checkpoints of the {state.get('stage')!r} stage; "
                               f"use another --output for the {stage_name!r} stage (or --no-resume to start over)")
    if state.get("trained") != [n for n, _ in named]:
        raise TrainConfigError(f"output: the checkpoint {found.path} trains other parameters than this model "
                               "(a different --init?); use another --output or --no-resume")
    trained = found.tensors("trained.safetensors")
    with torch.no_grad():
        for name, p in named:
            p.copy_(trained[name].to(p.device, p.dtype))
    extra = found.load("training_state.pt")
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if ema is not None:
        if (found.path / "ema.safetensors").is_file():
            ema.load_state_dict({"updates": extra.get("ema_updates") or 0, "shadow": found.tensors("ema.safetensors")})
        else:
            print("warning: the checkpoint has no EMA; the average restarts from the current weights", file=sys.stderr)
    ckpts.set_rng_state(extra["rng"])
    return found.step, int(state["samples"])

"""Validation during training: a fixed evaluation loss, and an upscale scored with ``uav eval``'s metrics.

* **Evaluation loss.** ``eval_samples`` windows drawn once from a separate seed stream,
  each scored with its own fixed generator: the same clips, timesteps and noise at every
  validation, so the numbers are comparable across steps (the per-step training loss at
  batch size 1 mostly reflects which timesteps happened to be drawn).
* **Held-out clip.** The first ``frames`` frames of the validation clip (centre crop of
  ``4 * crop``), degraded with a fixed seed, are upscaled with the current weights
  (:class:`uav.VideoUpscaler`, ``validation_inference_steps`` DDIM steps) and scored
  against the HQ frames: PSNR, SSIM and E*warp (:func:`uav.eval.evaluate_video`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from uav.train.config import SCALE, TrainConfig
from uav.train.data import WindowDataset, collate
from uav.train.stage import TrainingStage

#: offsets that keep the evaluation set's seed stream apart from the training stream
_EVAL_SEED_OFFSET = 1_000_003
_CLIP_SEED = 12345


class Validator:
    """Runs both validations for a stage; :meth:`run` returns a JSON-ready dict."""

    def __init__(self, stage: TrainingStage, dataset: WindowDataset, config: TrainConfig) -> None:
        self.stage = stage
        self.config = config
        eval_data = WindowDataset(dataset.clips, frames=config.frames, stride=config.stride, crop=config.crop,
                                  degradation=dataset.degradation, seed=config.seed + _EVAL_SEED_OFFSET)
        self.batches = [collate([eval_data[i]]) for i in range(config.eval_samples)]
        self.clip_path = config.validation_clip or dataset.clips[0].path
        self.degradation = dataset.degradation
        self._clip: tuple[np.ndarray, np.ndarray] | None = None

    def _validation_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lq, hq)`` uint8 clips of the held-out clip (read and degraded once)."""
        if self._clip is None:
            from uav.eval.degrade import degrade_clip
            from uav.io import probe, read_frames

            info = probe(self.clip_path)
            frames = read_frames(self.clip_path, end=min(self.config.frames, info.num_frames))
            if frames.dtype != np.uint8:
                frames = np.round(frames.astype(np.float32) / 65535.0 * 255.0).astype(np.uint8)
            side = min(self.config.crop * SCALE, info.height // 8 * 8, info.width // 8 * 8)
            side -= side % (SCALE * 8)
            y, x = (info.height - side) // 2, (info.width - side) // 2
            hq = np.ascontiguousarray(frames[:, y:y + side, x:x + side])
            lq = degrade_clip(hq, seed=_CLIP_SEED, config=self.degradation, scale=SCALE)
            self._clip = (lq, hq)
        return self._clip

    @torch.no_grad()
    def eval_loss(self, module: torch.nn.Module) -> float | None:
        """Mean loss over the fixed evaluation set."""
        if not self.batches:
            return None
        losses = []
        for i, batch in enumerate(self.batches):
            generator = torch.Generator().manual_seed(self.config.seed * 7919 + i)
            losses.append(float(self.stage.loss(module, batch, generator)))
        return float(np.mean(losses))

    @torch.no_grad()
    def video_metrics(self, unet: torch.nn.Module, vae: torch.nn.Module) -> dict[str, Any]:
        """Upscale the held-out clip with ``unet``/``vae`` and score it against its HQ frames."""
        from uav.eval import evaluate_video
        from uav.upscaler import VideoUpscaler

        lq, hq = self._validation_pair()
        start = self.stage.start
        upscaler = VideoUpscaler.from_components(unet=unet, vae=vae, scheduler=start.scheduler,
                                                 low_res_scheduler=start.low_res_scheduler,
                                                 text_encoder=start.text_encoder, tokenizer=start.tokenizer)
        out = upscaler.upscale(lq, num_inference_steps=self.config.validation_inference_steps, seed=0)
        m = evaluate_video(out, hq, ewarp=hq.shape[0] >= 2)
        return {"psnr": m.psnr, "ssim": m.ssim, "ewarp": m.ewarp, "clip": str(Path(self.clip_path).name)}

    def run(self, module: torch.nn.Module, unet: torch.nn.Module, vae: torch.nn.Module, *, video: bool) -> dict[str, Any]:
        """Both validations (the upscale only when ``video``); modules go to eval mode and back."""
        was_training = module.training
        module.eval()
        try:
            out: dict[str, Any] = {"eval_loss": self.eval_loss(module)}
            if video:
                out.update(self.video_metrics(unet, vae))
        finally:
            module.train(was_training)
        return out

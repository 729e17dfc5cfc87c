"""Training-free step caching for the ``fast`` preset (issue 21, item 5): DeepCache and guidance reuse.

**DeepCache** (Ma et al., arXiv 2312.00858): a U-Net's deep features change little
between adjacent denoising steps, while its finest skip branch carries the detail. Every
``interval``-th step runs the whole U-Net and keeps, per window group, the input of the
last up block's last resnet (:attr:`uav.models.UNetVideoOutput.deep_feature`); the steps
in between run only the input convolution, that resnet (on the kept feature and the
current input's features), the last temporal module and the output convolution: about
7 % of the network's FLOPs at the release's sizes.

The kept features are ``(B, C0, 8, h, w)`` per window group in the U-Net's dtype (C0 =
256 for the release: 1 KiB per latent pixel and frame of a guided fp16 window; windows
cover 4/3 of the frames: about 92 MB per frame of a 192x352 clip); they live where the
clip state lives (the host, with ``offload``).

**Guidance reuse**: from step ``guidance_reuse_from`` on, only the conditional half of
the CFG batch runs, and the guidance difference ``v_cond - v_uncond`` of the last step
that ran both is reused: ``v = v_cond + (g - 1) * delta`` (the published
``v_uncond + g * (v_cond - v_uncond)`` rewritten), which halves those steps.

Both change the numbers (they are opt-in, off in the default path).
"""

from __future__ import annotations

from typing import Hashable

import torch

Tensor = torch.Tensor

__all__ = ["StepCache"]


class StepCache:
    """DeepCache state of one denoising run: which steps are full, and the kept features.

    Args:
        interval: a full U-Net call every ``interval`` steps (step 0 is always full).
        device: where kept features are stored (the clip state's device).
    """

    def __init__(self, interval: int, device: torch.device | str = "cpu") -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self.device = torch.device(device)
        self._features: dict[Hashable, tuple[Tensor, bool]] = {}
        #: calls of each kind, for reports and FLOP counts: ``full`` / ``cached``
        self.calls = {"full": 0, "cached": 0}

    def full_step(self, index: int) -> bool:
        """Whether step ``index`` runs the whole U-Net (and refreshes the kept features)."""
        return index % self.interval == 0

    def feature(self, key: Hashable, guided: bool) -> Tensor | None:
        """The kept feature of window group ``key`` for a call with (``guided``) or without the
        unconditional rows; ``None`` when there is none (the call must then be full)."""
        entry = self._features.get(key)
        if entry is None:
            return None
        feature, had_uncond = entry
        if had_uncond == guided:
            return feature
        if had_uncond and not guided:
            return feature[1::2]  # window-major [uncond, cond] rows: keep the conditional ones
        return None

    def keep(self, key: Hashable, feature: Tensor, guided: bool) -> None:
        """Store window group ``key``'s feature (computed with or without the unconditional rows)."""
        self._features[key] = (feature, guided)

    def clear(self) -> None:
        self._features.clear()

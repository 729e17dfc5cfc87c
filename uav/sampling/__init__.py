"""Sampling: the published denoising loop and its parts, each named after the paper's concept.

* :mod:`~uav.sampling.schedulers` — the v-prediction DDIM split and low-res noise augmentation
* :mod:`~uav.sampling.windows` — temporal windows and their merge weights
* :mod:`~uav.sampling.propagation` — flow-guided recurrent latent propagation
* :mod:`~uav.sampling.loop` — the denoising loop (CFG, x0 prediction, propagation, step)
* :mod:`~uav.sampling.decode` — chunked, low-res-conditioned decoding
* :mod:`~uav.sampling.tiling` — spatial tile plans and blending
"""

from uav.sampling.decode import decode_chunks
from uav.sampling.loop import denoise
from uav.sampling.propagation import propagate_latents
from uav.sampling.schedulers import OfficialDDIM, low_res_add_noise
from uav.sampling.tiling import blend_tiles, feather_tile_plan, official_tile_plan
from uav.sampling.windows import merge_windows, official_segment_plan, uniform_segment_plan

__all__ = [
    "OfficialDDIM", "low_res_add_noise", "official_segment_plan", "uniform_segment_plan", "merge_windows",
    "propagate_latents", "denoise", "decode_chunks", "official_tile_plan", "feather_tile_plan", "blend_tiles",
]

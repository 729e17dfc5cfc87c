"""RAFT-large optical flow, loading the Upscale-A-Video release checkpoint.

The release ships ``propagator/raft-things.pth``: the original RAFT code's
``RAFT(small=False)`` state dict, saved through ``nn.DataParallel`` (every key starts
with ``module.``). torchvision's ``raft_large`` is a port of the same network (its
``C_T_V1`` weights are that checkpoint converted), so :func:`official_to_torchvision`
renames the keys and the network runs in torchvision.

Inputs are fed as the published ``RAFT_bi`` feeds them (SPEC §7.6): frames in
``[-1, 1]`` directly, 20 refinement iterations, frames resized to sizes rounded up to
a multiple of 8, flows resized back. Unlike the published code, which rescales the
wrong axes and never rescales the vector lengths, the flows here are rescaled
correctly (x by the width ratio, y by the height ratio).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import check_frames, check_size, resize_flow

Tensor = torch.Tensor

__all__ = ["RaftFlow", "official_to_torchvision", "load_raft_state_dict", "RAFT_WEIGHTS_RELPATH"]

#: where the release keeps the RAFT checkpoint, relative to the model folder
RAFT_WEIGHTS_RELPATH = "propagator/raft-things.pth"

_ENC = r"(feature_encoder|context_encoder)"

# Official RAFT name -> torchvision name, applied in order to keys without "module.".
_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^fnet\.", "feature_encoder."),
        (r"^cnet\.", "context_encoder."),
        (rf"^{_ENC}\.conv1\.", r"\1.convnormrelu.0."),
        (rf"^{_ENC}\.norm1\.", r"\1.convnormrelu.1."),
        (rf"^{_ENC}\.conv2\.", r"\1.conv."),
        (rf"^{_ENC}\.(layer\d\.\d)\.conv1\.", r"\1.\2.convnormrelu1.0."),
        (rf"^{_ENC}\.(layer\d\.\d)\.conv2\.", r"\1.\2.convnormrelu2.0."),
        (rf"^{_ENC}\.(layer\d\.\d)\.norm1\.", r"\1.\2.convnormrelu1.1."),
        (rf"^{_ENC}\.(layer\d\.\d)\.norm2\.", r"\1.\2.convnormrelu2.1."),
        (r"^update_block\.encoder\.convc1\.", "update_block.motion_encoder.convcorr1.0."),
        (r"^update_block\.encoder\.convc2\.", "update_block.motion_encoder.convcorr2.0."),
        (r"^update_block\.encoder\.convf1\.", "update_block.motion_encoder.convflow1.0."),
        (r"^update_block\.encoder\.convf2\.", "update_block.motion_encoder.convflow2.0."),
        (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
        (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
        (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
        (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
    ]
]
# In the official residual block ``norm3`` *is* ``downsample.1`` (one module under two
# names), so its keys are aliases.
_NORM3 = re.compile(rf"^{_ENC}\.(layer\d\.\d)\.norm3\.(.+)$")

_TORCHVISION_KEYS: frozenset[str] | None = None


def _build_model() -> torch.nn.Module:
    from torchvision.models.optical_flow import raft_large

    return raft_large(weights=None, progress=False)


def _torchvision_keys() -> frozenset[str]:
    global _TORCHVISION_KEYS
    if _TORCHVISION_KEYS is None:
        _TORCHVISION_KEYS = frozenset(_build_model().state_dict())
    return _TORCHVISION_KEYS


def official_to_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official RAFT-large state dict to torchvision ``raft_large`` names.

    Accepts keys with or without the ``module.`` prefix; ``norm3`` aliases of
    ``downsample.1`` are dropped (or used when ``downsample.1`` is absent). A state dict
    already in torchvision naming is returned unchanged.

    Raises:
        ValueError: a key matches no known official RAFT-large name (listed).
    """
    keys = list(state_dict)
    if keys and set(keys) <= _torchvision_keys():
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    aliases: dict[str, Tensor] = {}
    unknown: list[str] = []
    for original, value in state_dict.items():
        new = original[len("module."):] if original.startswith("module.") else original
        for pattern, repl in _RENAMES:
            new = pattern.sub(repl, new)
        m = _NORM3.match(new)
        if m:
            aliases[f"{m.group(1)}.{m.group(2)}.downsample.1.{m.group(3)}"] = value
            continue
        if new not in _torchvision_keys():
            unknown.append(original)
        out[new] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise ValueError(f"{len(unknown)} key(s) are not RAFT-large (small=False) parameters: {shown}")
    for key, value in aliases.items():
        out.setdefault(key, value)
    return out


def _read_checkpoint(path: Path) -> Mapping[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    # Some re-saves wrap the weights; the release file is a bare state dict.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"RAFT weights {path} hold a {type(obj).__name__}, expected a state dict")
    return obj


def load_raft_state_dict(model: torch.nn.Module, weights: str | Path | Mapping[str, Tensor]) -> None:
    """Load official (or torchvision-named) RAFT-large weights into ``model`` strictly.

    ``weights`` is a ``.pth``/``.pt`` (read with ``weights_only=True``) or
    ``.safetensors`` path, or a state dict.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the keys or shapes do not fit RAFT-large, or a tensor is not floating point
            or not finite; the message names the file.
    """
    if isinstance(weights, Mapping):
        source, raw = "the given state dict", weights
    elif isinstance(weights, (str, Path)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"RAFT weights not found: {path} (expected the release's {RAFT_WEIGHTS_RELPATH})")
        source = str(path)
        try:
            raw = _read_checkpoint(path)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"could not read RAFT weights {path}: {type(exc).__name__}: {exc}") from exc
    else:
        raise TypeError(f"weights must be a path or a state dict, got {type(weights).__name__}")
    from uav.weights.files import check_tensors

    check_tensors(raw, source)  # NaN or integer weights would make every flow garbage, silently
    try:
        mapped = official_to_torchvision(raw)
    except ValueError as exc:
        raise ValueError(f"RAFT weights {source} do not fit RAFT-large: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(f"RAFT weights {source} lack {len(missing)} RAFT-large parameter(s): {shown}")
    bad = [
        f"{k} {tuple(mapped[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(mapped[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ValueError(f"RAFT weights {source} have wrong shapes: {'; '.join(bad[:5])}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()}, strict=True)


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


class RaftFlow:
    """RAFT-large bidirectional flow as the published ``RAFT_bi`` computes it.

    Args:
        weights: the release ``propagator/raft-things.pth`` (official key names, or a
            torchvision-named / ``.safetensors`` copy), or a state dict. Required:
            there is no download; use ``flow="dis"`` when the weights are absent.
        device: where RAFT runs (default: the frames' device). Flows are returned on
            the frames' device.
        iters: refinement iterations (the published code uses 20).
        batch_size: frame pairs per network call (memory/speed trade-off).
        dtype: compute dtype: float32 (default), or float16/bfloat16 through autocast
            (less memory and faster on GPU; flows are returned as float32).

    torchvision's RAFT needs feature maps of at least 16x16, i.e. frames of at least
    128 px a side: smaller clips are enlarged to 128 (flows are rescaled back). The
    published code would feed them unchanged, where its coarsest correlation level
    degenerates.
    """

    #: smallest side torchvision's correlation pyramid accepts (16 feature pixels x 8)
    MIN_SIDE = 128

    def __init__(
        self,
        weights: str | Path | Mapping[str, Tensor] | None = None,
        *,
        device: str | torch.device | None = None,
        iters: int = 20,
        batch_size: int = 4,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if weights is None:
            raise ValueError(
                "the 'raft' flow estimator needs weights=<path to the release's "
                f"{RAFT_WEIGHTS_RELPATH}>; without RAFT weights select flow='dis' (no weights needed)"
            )
        if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
            raise ValueError(f"iters must be an int >= 1, got {iters!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype!r}")
        self.iters = iters
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.model = _build_model()
        load_raft_state_dict(self.model, weights)
        self.model.eval().requires_grad_(False)
        if self.device is not None:
            self.model.to(self.device)

    def compute_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H8, W8)`` RAFT runs at for frames of ``height x width``."""
        return (max(_round_up(height, 8), self.MIN_SIDE), max(_round_up(width, 8), self.MIN_SIDE))

    @torch.inference_mode()
    def __call__(self, frames: Tensor, *, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Forward and backward flows ``(1, 2, T-1, h, w)`` of a ``(T, 3, H, W)`` clip in [-1, 1]."""
        frames = check_frames(frames)
        t, _, h, w = frames.shape
        out_size = check_size(size, (int(h), int(w)))
        device = self.device or frames.device
        self.model.to(device=device)
        x = frames.to(device=device, dtype=torch.float32)
        h8, w8 = self.compute_size(int(h), int(w))
        if (h8, w8) != (h, w):
            # Per frame this equals the published trilinear resize with T unchanged.
            x = F.interpolate(x, size=(h8, w8), mode="bilinear", align_corners=False)
        first, second = x[:-1], x[1:]
        forward, backward = [], []
        for s in range(0, t - 1, self.batch_size):
            a, b = first[s:s + self.batch_size], second[s:s + self.batch_size]
            # One call computes both directions: batch (a->b, b->a). Reduced precision
            # goes through autocast: torchvision's RAFT builds float32 coordinate grids.
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                flows = self.model(torch.cat([a, b]), torch.cat([b, a]), num_flow_updates=self.iters)[-1]
            n = a.shape[0]
            forward.append(flows[:n].float())
            backward.append(flows[n:].float())
        # Bilinear both ways, as the published code resizes back.
        fwd = resize_flow(torch.cat(forward), out_size, mode="bilinear")
        bwd = resize_flow(torch.cat(backward), out_size, mode="bilinear")

        def pack(f: Tensor) -> Tensor:
            return f.permute(1, 0, 2, 3).unsqueeze(0).contiguous().to(frames.device)

        return pack(fwd), pack(bwd)

    def __repr__(self) -> str:
        return f"RaftFlow(iters={self.iters}, device={self.device}, dtype={self.dtype})"

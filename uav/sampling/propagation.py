"""Flow-guided latent propagation as the published Upscale-A-Video code runs it.

Implements SPEC §4 (Zhou et al., "Upscale-A-Video", CVPR 2024, §3.3 Eq. 2-3;
official ``Propagation(4, learnable=False)``). Differences from the paper's text
that the published code has, and that are reproduced here:

* the two directions are chained: a backward pass over the input, then a forward
  pass over the backward result, and only the forward result is returned;
* the forward-backward consistency threshold is adaptive,
  ``|u + ṽ|² < α1·(|u|² + |ṽ|²) + α2`` (strict);
* features are warped with nearest sampling, the consistency check warps bilinearly.

Everything is vectorised over batch and channels, and all ``T-1`` consistency masks
are computed in one batched call; only the recurrence over frames is sequential.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = ["propagate_latents", "flow_warp", "consistency_mask", "resize_flows"]

_MODES = ("fuse", "copy")


def flow_warp(x: Tensor, flow: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample ``x`` at ``(px + u_x, py + u_y)`` for every pixel ``p``.

    Args:
        x: ``(N, C, H, W)`` features.
        flow: ``(N, 2, H, W)`` displacement in pixels, channel 0 = x, 1 = y.
        mode: ``"nearest"`` or ``"bilinear"`` (``grid_sample`` modes).

    Returns:
        ``(N, C, H, W)``; samples outside the frame read zeros. Coordinates are
        normalised with ``align_corners=True`` as ``2·p/(size−1) − 1``, as in the
        published code.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got shape {tuple(flow.shape)}")
    if flow.shape[0] != x.shape[0] or flow.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"flow {tuple(flow.shape)} must match x {tuple(x.shape)} in batch size and spatial size"
        )
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    _, _, h, w = x.shape
    flow = flow.to(x.dtype)
    gx = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + flow[:, 0]
    gy = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + flow[:, 1]
    # max(·, 1) keeps a 1-pixel-wide axis finite (it then maps to -1, the only pixel).
    gx = 2.0 * gx / max(w - 1, 1) - 1.0
    gy = 2.0 * gy / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def _length_sq(v: Tensor) -> Tensor:
    return (v**2).sum(dim=1, keepdim=True)


def consistency_mask(flow: Tensor, flow_other: Tensor, *, alpha1: float = 1e-3, alpha2: float = 0.05) -> Tensor:
    """Forward-backward consistency of ``flow`` against the opposite ``flow_other``.

    With ``ṽ = warp_bilinear(flow_other, flow)``, a pixel is valid where
    ``|flow + ṽ|² < alpha1·(|flow|² + |ṽ|²) + alpha2`` (strict inequality).

    Args:
        flow, flow_other: ``(N, 2, H, W)``, or ``(B, 2, K, H, W)`` for ``K`` flow pairs
            checked at once.

    Returns:
        A bool mask, ``(N, 1, H, W)`` or ``(B, 1, K, H, W)`` accordingly.
    """
    if flow.shape != flow_other.shape:
        raise ValueError(
            f"flow and flow_other must have the same shape, got {tuple(flow.shape)} and {tuple(flow_other.shape)}"
        )
    if flow.ndim == 5:
        b, c, k, h, w = flow.shape
        if c != 2:
            raise ValueError(f"flow must have 2 channels (x, y), got shape {tuple(flow.shape)}")
        fold = lambda f: f.permute(0, 2, 1, 3, 4).reshape(b * k, 2, h, w)  # noqa: E731
        mask = consistency_mask(fold(flow), fold(flow_other), alpha1=alpha1, alpha2=alpha2)
        return mask.reshape(b, k, 1, h, w).permute(0, 2, 1, 3, 4)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W) or (B, 2, K, H, W), got shape {tuple(flow.shape)}")
    other_warped = flow_warp(flow_other, flow, "bilinear")
    diff_sq = _length_sq(flow + other_warped)
    threshold = alpha1 * (_length_sq(flow) + _length_sq(other_warped)) + alpha2
    return diff_sq < threshold


def resize_flows(flows: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-resize ``(B, 2, K, H_f, W_f)`` flows to ``size = (h, w)`` and rescale them.

    Both components are multiplied by ``s = w / W_f`` (the published code uses the
    width ratio for x and y alike).
    """
    h, w = size
    if tuple(flows.shape[-2:]) == (h, w):
        return flows
    k = flows.shape[2]
    resized = F.interpolate(flows, size=(k, h, w), mode="area")
    return resized * (w / flows.shape[-1])


def _check_inputs(x: Tensor, flows_forward: Tensor, flows_backward: Tensor) -> None:
    for name, value in (("x", x), ("flows_forward", flows_forward), ("flows_backward", flows_backward)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.ndim != 5:
            raise ValueError(f"{name} must be 5-D (B, C, T, H, W), got shape {tuple(value.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if flows_forward.shape != flows_backward.shape:
        raise ValueError(
            "flows_forward and flows_backward must have the same shape, got "
            f"{tuple(flows_forward.shape)} and {tuple(flows_backward.shape)}"
        )
    b, _, t, _, _ = x.shape
    fb, fc, ft, _, _ = flows_forward.shape
    if fc != 2:
        raise ValueError(
            f"flows must have 2 channels (x, y displacement), got {fc} (shape {tuple(flows_forward.shape)})"
        )
    if ft != t - 1:
        raise ValueError(f"flows must hold T-1 = {t - 1} frame pairs for x with T = {t}, got {ft}")
    if fb not in (1, b):
        raise ValueError(f"flows batch size must be 1 or x's batch size {b}, got {fb}")


def propagate_latents(
    x: Tensor,
    flows_forward: Tensor,
    flows_backward: Tensor,
    *,
    fuse_scale: float = 0.5,
    alpha1: float = 1e-3,
    alpha2: float = 0.05,
    mode: str = "fuse",
    return_masks: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Chained backward-then-forward propagation of ``x`` along the flows (SPEC §4.4).

    Args:
        x: ``(B, C, T, h, w)`` latents (the pipeline passes the predicted ``x0``).
        flows_forward: ``(B, 2, T-1, H_f, W_f)``; ``[:, :, k]`` maps frame ``k`` to ``k+1``.
        flows_backward: same shape; ``[:, :, k]`` maps frame ``k+1`` to ``k``. A flow batch
            of 1 is shared by every row of ``x``. Flows at another resolution are
            area-resized to ``(h, w)`` and scaled by ``w / W_f``.
        fuse_scale: β, the weight of the warped neighbour in ``"fuse"`` mode.
        alpha1, alpha2: the adaptive consistency threshold.
        mode: ``"fuse"`` (``β·warped + (1−β)·current``) or ``"copy"`` (warped only) on
            valid pixels; invalid pixels keep the current features.
        return_masks: also return the validity masks.

    Returns:
        The forward-pass result, shaped like ``x``; with ``return_masks`` the tuple
        ``(out, mask_backward_pass, mask_forward_pass)``, masks ``(B, 1, T-1, h, w)``
        float32 in {0, 1}: ``mask_backward_pass[:, :, k]`` gates frame ``k+1 → k`` and
        ``mask_forward_pass[:, :, k]`` gates frame ``k → k+1``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    _check_inputs(x, flows_forward, flows_backward)
    b, _, t, h, w = x.shape
    if t == 1:
        if return_masks:
            empty = x.new_zeros((b, 1, 0, h, w), dtype=torch.float32)
            return x, empty, empty.clone()
        return x

    # Nearest warping copies values, so working in float32 loses nothing for half inputs
    # and keeps the sampling grid (and hence every nearest index) exact.
    work_dtype = torch.promote_types(x.dtype, torch.float32)
    feats = x.to(work_dtype)
    ff = resize_flows(flows_forward.to(device=x.device, dtype=work_dtype), (h, w))
    fbw = resize_flows(flows_backward.to(device=x.device, dtype=work_dtype), (h, w))

    # The masks depend on the flows only, so all T-1 of them are computed up front,
    # before a shared (batch-1) flow is broadcast to the batch of x.
    mask_bwd = consistency_mask(ff, fbw, alpha1=alpha1, alpha2=alpha2).to(work_dtype).expand(b, -1, -1, -1, -1)
    mask_fwd = consistency_mask(fbw, ff, alpha1=alpha1, alpha2=alpha2).to(work_dtype).expand(b, -1, -1, -1, -1)
    ff = ff.expand(b, -1, -1, -1, -1)
    fbw = fbw.expand(b, -1, -1, -1, -1)

    def blend(warped: Tensor, current: Tensor, mask: Tensor) -> Tensor:
        proposal = warped if mode == "copy" else fuse_scale * warped + (1 - fuse_scale) * current
        return mask * proposal + (1 - mask) * current

    backward: list[Tensor] = [feats[:, :, -1]]
    for k in range(t - 2, -1, -1):
        warped = flow_warp(backward[-1], ff[:, :, k], "nearest")
        backward.append(blend(warped, feats[:, :, k], mask_bwd[:, :, k]))
    backward.reverse()

    forward: list[Tensor] = [backward[0]]
    for k in range(1, t):
        warped = flow_warp(forward[-1], fbw[:, :, k - 1], "nearest")
        forward.append(blend(warped, backward[k], mask_fwd[:, :, k - 1]))

    out = torch.stack(forward, dim=2).to(x.dtype)
    if return_masks:
        return out, mask_bwd.to(torch.float32).contiguous(), mask_fwd.to(torch.float32).contiguous()
    return out

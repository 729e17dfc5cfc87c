"""The CPU proof of issue 21: what the library's default path does, counted without a GPU.

``python -m benchmarks.static --json PATH [--tiny] [--workloads ...]`` writes, per workload
(``lr192x352``, ``lr270x480``):

* ``graph_breaks``: ``torch._dynamo.explain`` graph breaks of one U-Net call (one window,
  CFG batch), one decode piece of each decoder and one propagation call (tiny networks,
  real tensors, the workload's odd sizes scaled down: the count depends on the code, not
  the size);
* ``host_syncs_per_step``: operations that make the host wait for the GPU during one
  full denoising step (every window, fp16 NaN/inf policy, offloaded clip state,
  propagation) and one decode piece with its hand-over to the host, on the real-size
  networks on fake tensors (:class:`benchmarks.dispatch.SyncCounter`); ``host_syncs``
  splits it and names the lines;
* ``glue_bytes_ratio``: bytes moved by everything but convolutions, matmuls and
  attention in one CFG U-Net call at real size, the library's modules over the published
  structure (:mod:`uav.models.published`), fp16 as the default on CUDA;
  ``glue_gib`` gives both, their tables by operation and by library block, and the other
  activation layouts;
* ``glue_bytes_ratio_compiled``: the same with the library's blocks compiled as
  ``compile="auto"`` does on a long clip on a GPU (:mod:`benchmarks.compiled_glue`:
  inductor's fused kernels counted on fake tensors, CPU schedule), over the same
  published eager count; a separate number, never the eager one;
* ``flops_per_frame``: U-Net FLOPs per output frame (``torch.utils.flop_counter`` on fake
  real-size networks) of the published loop (``baseline``: its window calls, duplicates
  included), the library's ``default`` and the ``fast`` preset (its call pattern recorded
  from the library loop run with the same frames, windows and steps on the tiny network),
  and ``fast_flops_ratio`` = baseline / fast;
* ``predicted_peak_gib``: :func:`uav.memory.estimate_memory` of the default path;
* ``compile_parity_max_abs``: ``VideoUpscaler.upscale`` with ``compile=True`` against
  ``compile=False``, tiny networks, fp32, CPU (inductor), largest absolute difference.

``--tiny`` runs every count on the tiny networks (the test suite's variant, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.dispatch import GlueBytes, SyncCounter, count, fake_model, fake_networks, flop_counter  # noqa: E402
from benchmarks.library import load_uav  # noqa: E402
from benchmarks.workloads import (TINY_WORKLOADS, WORKLOADS, Settings, Workload, ddim_config,  # noqa: E402
                                  model_config)

__all__ = ["main", "graph_breaks", "host_syncs", "glue_bytes", "flops_per_frame", "compile_parity",
           "predicted_peak_gib"]

GIB = 2**30
TEXT_TOKENS = 77


def _unet_inputs(cfg: dict, device: torch.device, dtype: torch.dtype, batch: int, frames: int, h: int,
                 w: int) -> tuple[Any, ...]:
    return (torch.zeros(batch, 4, frames, h, w, device=device, dtype=dtype), torch.tensor(500, device=device),
            torch.zeros(batch, 3, frames, h, w, device=device, dtype=dtype),
            torch.zeros(batch, TEXT_TOKENS, cfg["cross_attention_dim"], device=device, dtype=dtype))


# ---------------------------------------------------------------------------- graph breaks
def graph_breaks(wl: Workload) -> dict[str, int]:
    """Dynamo graph breaks of each network's call on the tiny networks at ``wl``'s tiny sizes."""
    import torch._dynamo as dynamo

    uav = load_uav()
    tiny = TINY_WORKLOADS[wl.name]
    h, w = tiny.height, tiny.width
    torch.manual_seed(0)
    unet = uav["UNetVideoModel"].from_config(model_config("unet", True)).eval()
    x, t, lr, ctx = _unet_inputs(dict(unet.config), torch.device("cpu"), torch.float32, 2, 8, h, w)
    labels = torch.full((2,), 120)
    out: dict[str, int] = {}
    with torch.no_grad():
        explained = dynamo.explain(lambda a, b, c: unet(a, t, b, encoder_hidden_states=c, class_labels=labels))
        out["unet"] = explained(x, lr, ctx).graph_break_count
        for kind in ("3d", "video"):
            vae = uav["AutoencoderKLVideo"].from_config(model_config(f"vae_{kind}", True)).eval()
            z, img = torch.randn(1, 4, 3, h, w), torch.rand(1, 3, 3, h, w) * 2 - 1
            decode = dynamo.explain(lambda a, b, v=vae: v.decode(a, b, 1.0).sample)
            out[f"vae_{kind}"] = decode(z, img).graph_break_count
        x0, flows = torch.randn(1, 4, 8, h, w), torch.randn(2, 1, 2, 7, h, w)
        out["propagation"] = dynamo.explain(lambda a, f, b: uav["propagate_latents"](a, f, b, fuse_scale=0.5))(
            x0, flows[0], flows[1]).graph_break_count
    dynamo.reset()
    return out


# ---------------------------------------------------------------------------- host syncs
def host_syncs(wl: Workload, tiny: bool) -> dict[str, Any]:
    """Sync-forcing operations in one full denoising step and one decode piece of the default path
    (fp16 U-Net with the NaN/inf policy, fp32 VAE, clip state on the host), on fake tensors."""
    uav = load_uav()
    from uav.sampling.transfer import Transfers

    settings = Settings()
    unet_cfg, vae_cfg = model_config("unet", tiny), model_config(f"vae_{wl.vae}", tiny)
    sched = uav["OfficialDDIM"](ddim_config())
    timesteps = [int(t) for t in sched.set_timesteps(settings.steps)]
    plan = uav["official_segment_plan"](wl.frames, settings.window)
    host = torch.device("cpu")
    result: dict[str, Any] = {}
    with fake_networks(torch.float16) as dev:
        unet = fake_model(uav["UNetVideoModel"], unet_cfg, dev)
        lat = torch.zeros(1, 4, wl.frames, wl.height, wl.width, device=host)
        lr = torch.zeros(1, 3, wl.frames, wl.height, wl.width, device=host)
        text = torch.zeros(2, TEXT_TOKENS, unet_cfg["cross_attention_dim"], device=host)
        flows = (torch.zeros(1, 2, wl.frames - 1, wl.height, wl.width, device=host),) * 2
        step = SyncCounter()
        with step, torch.no_grad():
            uav["denoise"](unet, sched, lat, lr, text, noise_level=settings.noise_level,
                           guidance_scale=settings.guidance, plan=plan, timesteps=timesteps[:1],
                           propagation_steps=(0,), flows=flows, recovery=uav["Recovery"](), transfers=Transfers(dev))
        result["step"] = dict(step.counts)
        result["step_where"] = step.where[:10]
    with fake_networks(torch.float32) as dev:
        vae = fake_model(uav["AutoencoderKLVideo"], vae_cfg, dev)
        lat = torch.zeros(1, 4, wl.frames, wl.height, wl.width, device=dev)
        lr = torch.zeros(1, 3, wl.frames, wl.height, wl.width, device=dev)
        piece = SyncCounter()
        with piece, torch.no_grad():
            _, frames = next(uav["decode_chunks"](vae, lat, lr, chunk=settings.decode_chunk,
                                                  recovery=uav["Recovery"]()))
            Transfers(dev).to_host(frames)  # the pipeline's hand-over of a decoded chunk
        result["decode_piece"] = dict(piece.counts)
        result["decode_where"] = piece.where[:10]
    result["per_step"] = sum(result["step"].values()) + sum(result["decode_piece"].values())
    return result


# ---------------------------------------------------------------------------- glue bytes
def glue_bytes(wl: Workload, tiny: bool, layouts: Sequence[str] = ("frames", "ncdhw", "channels_last"),
               compiled: bool = True) -> dict:
    """Glue bytes of one CFG U-Net call (8 frames, fp16), library layouts vs the published structure;
    with ``compiled``, also with the library's regions compiled by inductor (``compiled_*`` keys)."""
    uav = load_uav()
    from uav.models.published import published_modules

    cfg = model_config("unet", tiny)
    out: dict[str, Any] = {"by_layout_gib": {}}
    with fake_networks(torch.float16) as dev:
        unet = fake_model(uav["UNetVideoModel"], cfg, dev)
        x, t, lr, ctx = _unet_inputs(cfg, dev, torch.float16, 2, min(8, wl.frames), wl.height, wl.width)

        def call() -> None:
            unet(x, t, lr, encoder_hidden_states=ctx, class_labels=120)

        default = unet.layout
        library = {}
        for layout in layouts:
            unet.set_layout(layout)
            library[layout] = count(GlueBytes, call)
            out["by_layout_gib"][layout] = library[layout].total / GIB
        unet.set_layout(default)
        with published_modules():
            published = count(GlueBytes, call)
    out["published_gib"] = published.total / GIB
    out["library_gib"] = out["by_layout_gib"][default]
    out["library_layout"] = default
    out["ratio"] = out["library_gib"] / out["published_gib"]
    out["published_by_op_gib"] = _gib(published.by_op, 8)
    out["library_by_op_gib"] = _gib(library[default].by_op, 10)
    out["published_by_block_gib"] = _gib(published.by_block, 10)
    out["library_by_block_gib"] = _gib(library[default].by_block, 10)
    out["library_by_block_op_gib"] = _gib(library[default].by_block_op, 16)
    out["by_layout_by_op_gib"] = {name: _gib(mode.by_op, 8) for name, mode in library.items() if name != default}
    if compiled:
        out.update(_compiled_glue(cfg, wl, out["published_gib"]))
    return out


def _compiled_glue(cfg: dict, wl: Workload, published_gib: float) -> dict[str, Any]:
    """The same call with the regions compiled (:mod:`benchmarks.compiled_glue`: inductor's C++
    schedule on fake CPU tensors), in the default layout."""
    from benchmarks.compiled_glue import compiled_glue

    uav = load_uav()
    with fake_networks(torch.float16):
        cpu = torch.device("cpu")  # inductor generates Triton only with a GPU: its C++ schedule is counted
        unet = fake_model(uav["UNetVideoModel"], cfg, cpu)
        x, t, lr, ctx = _unet_inputs(cfg, cpu, torch.float16, 2, min(8, wl.frames), wl.height, wl.width)
        counted = compiled_glue(unet, lambda: unet(x, t, lr, encoder_hidden_states=ctx, class_labels=120))
    gib = counted["total"] / GIB
    return {"compiled_gib": gib, "compiled_ratio": gib / published_gib, "compiled_layout": unet.layout,
            "compiled_outside_regions_gib": counted["outside"] / GIB, "compiled_graphs": counted["graphs"],
            "compiled_by_class_gib": {k: v / GIB for k, v in sorted(counted["by_class"].items(),
                                                                     key=lambda kv: -kv[1])}}


def _gib(counter: Any, n: int) -> dict[str, float]:
    """The ``n`` largest entries of a byte counter, in GiB."""
    return {k: v / GIB for k, v in counter.most_common(n)}


# ---------------------------------------------------------------------------- FLOPs
def _call_flops(unet: Any, cfg: dict, dev: torch.device, wl: Workload, batch: int, cached: bool) -> int:
    frames = min(8, wl.frames)
    x, t, lr, ctx = _unet_inputs(cfg, dev, torch.float16, batch, frames, wl.height, wl.width)
    deep = None
    if cached:
        with torch.no_grad():
            deep = unet(x, t, lr, encoder_hidden_states=ctx, class_labels=120, keep_deep_feature=True).deep_feature
    extra = {"deep_feature": deep} if deep is not None else {}
    with flop_counter() as fc, torch.no_grad():
        unet(x, t, lr, encoder_hidden_states=ctx, class_labels=120, **extra)
    return int(fc.get_total_flops())


def _fast_calls(wl: Workload) -> dict[tuple[int, bool], int]:
    """U-Net calls of the ``fast`` preset by ``(rows per window, cached)``: the library loop run with the
    workload's frames, windows and steps (tiny network, tiny frames: the call pattern is the same)."""
    uav = load_uav()
    from uav.sampling.stepcache import StepCache

    from uav.registry import default_registry

    s = uav["UpscaleSettings"](preset="fast")
    sched = default_registry().get("scheduler", s.scheduler, config=ddim_config())
    timesteps = [int(t) for t in sched.set_timesteps(s.num_inference_steps)]
    torch.manual_seed(0)
    unet = uav["UNetVideoModel"].from_config(model_config("unet", True)).eval()
    calls: dict[tuple[int, bool], int] = {}

    def record(module: Any, args: Any, kwargs: Any) -> None:
        key = (args[0].shape[0], kwargs.get("deep_feature") is not None)
        calls[key] = calls.get(key, 0) + 1

    hook = unet.register_forward_pre_hook(record, with_kwargs=True)
    plan = uav["official_segment_plan"](wl.frames, s.window)
    try:
        with torch.no_grad():
            uav["denoise"](unet, sched, torch.randn(1, 4, wl.frames, 4, 6), torch.randn(1, 3, wl.frames, 4, 6),
                           torch.randn(2, 7, unet.config.cross_attention_dim), noise_level=s.noise_level,
                           guidance_scale=s.guidance_scale, plan=plan, timesteps=timesteps,
                           step_cache=StepCache(s.step_cache_interval), guidance_reuse_from=s.guidance_reuse_from)
    finally:
        hook.remove()
    return calls


def flops_per_frame(wl: Workload, tiny: bool) -> dict[str, Any]:
    """U-Net FLOPs per output frame of the published loop, the default path and the ``fast`` preset."""
    uav = load_uav()
    from benchmarks.baseline import eager_attention
    from uav.models.published import published_modules

    settings = Settings()
    plan = uav["official_segment_plan"](wl.frames, settings.window)
    cfg = model_config("unet", tiny)
    fast_calls = _fast_calls(wl)
    # attention as explicit matmuls in every count: a fake device runs no fused kernel to count
    with fake_networks(torch.float16) as dev, eager_attention():
        unet = fake_model(uav["UNetVideoModel"], cfg, dev)
        with published_modules(), eager_attention():  # the published forwards, then their attention
            published = _call_flops(unet, cfg, dev, wl, 2, False)
        per_kind = {key: _call_flops(unet, cfg, dev, wl, key[0], key[1]) for key in fast_calls}
        full = per_kind.get((2, False)) or _call_flops(unet, cfg, dev, wl, 2, False)
    baseline = settings.steps * len(plan.calls) * published
    default = settings.steps * len(plan.windows) * full
    fast = sum(n * per_kind[key] for key, n in fast_calls.items())
    return {"baseline": baseline / wl.frames, "default": default / wl.frames, "fast": fast / wl.frames,
            "fast_calls": {f"rows{r}_{'cached' if c else 'full'}": n for (r, c), n in sorted(fast_calls.items())},
            "call_tflop": {"published_cfg": published / 1e12,
                           **{f"rows{r}_{'cached' if c else 'full'}": v / 1e12 for (r, c), v in per_kind.items()}}}


# ---------------------------------------------------------------------------- memory, compile
def predicted_peak_gib(wl: Workload, tiny: bool) -> float:
    """The memory model's peak for the default path (fp16 U-Net, fp32 VAE, offloaded state)."""
    from uav.memory import estimate_memory

    uav = load_uav()
    e = estimate_memory(model_config("unet", tiny), model_config(f"vae_{wl.vae}", tiny), height=wl.height,
                        width=wl.width, frames=wl.frames, settings=uav["UpscaleSettings"](tile=False),
                        unet_dtype=torch.float16, vae_dtype=torch.float32)
    return e.peak_gib


def compile_parity(wl: Workload) -> dict[str, Any]:
    """``upscale(compile=True)`` vs ``compile=False`` on the tiny release (fp32, CPU, inductor)."""
    import tempfile

    import numpy as np

    from uav import VideoUpscaler
    from uav.weights import make_tiny_release

    tiny = TINY_WORKLOADS[wl.name]
    with tempfile.TemporaryDirectory() as tmp:
        release = make_tiny_release(Path(tmp) / "tiny", vae=(wl.vae,))
        up = VideoUpscaler.from_pretrained(release, vae=wl.vae, device="cpu", dtype="fp32")
        clip = (np.random.RandomState(0).rand(min(tiny.frames, 9), 8, 12, 3) * 255).astype(np.uint8)
        kw = dict(prompt="a", num_inference_steps=2, seed=0, output_type="pt", propagation_steps=(1,))
        t0 = time.perf_counter()
        eager = up.upscale(clip, compile=False, **kw)
        t1 = time.perf_counter()
        compiled = up.upscale(clip, compile=True, **kw)
        t2 = time.perf_counter()
    return {"max_abs": float((eager - compiled).abs().max()), "eager_s": t1 - t0, "compiled_first_run_s": t2 - t1}


# ---------------------------------------------------------------------------- the command
def run(names: Sequence[str], tiny: bool, log: Callable[[str], None] = print,
        skip: Sequence[str] = ()) -> dict[str, Any]:
    """Every count for ``names``; ``tiny``: on the tiny networks at tiny sizes."""
    table = TINY_WORKLOADS if tiny else WORKLOADS
    out: dict[str, Any] = {"tiny": tiny, "torch": torch.__version__, "workloads": {}}
    parity = None
    for name in names:
        wl = table[name]
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"lr": [wl.height, wl.width], "frames": wl.frames, "vae": f"vae_{wl.vae}"}
        entry["graph_breaks"] = graph_breaks(wl) if "graph_breaks" not in skip else None
        syncs = host_syncs(wl, tiny)
        entry["host_syncs_per_step"] = syncs["per_step"]
        entry["host_syncs"] = syncs
        glue = glue_bytes(wl, tiny, compiled="compiled" not in skip)
        entry["glue_bytes_ratio"] = glue["ratio"]
        entry["glue_bytes_ratio_compiled"] = glue.get("compiled_ratio")
        entry["glue_gib"] = glue
        flops = flops_per_frame(wl, tiny)
        entry["flops_per_frame"] = {k: flops[k] for k in ("baseline", "default", "fast")}
        entry["fast_flops_ratio"] = flops["baseline"] / flops["fast"]
        entry["flops"] = flops
        entry["predicted_peak_gib"] = predicted_peak_gib(wl, tiny)
        if "compile" not in skip:
            parity = compile_parity(wl)
        entry["compile_parity_max_abs"] = None if parity is None else parity["max_abs"]
        entry["compile_parity"] = parity
        entry["seconds"] = time.perf_counter() - t0
        out["workloads"][name] = entry
        log(f"[static] {name}: graph breaks {entry['graph_breaks']}, host syncs/step {entry['host_syncs_per_step']}, "
            f"glue ratio {entry['glue_bytes_ratio']:.3f} (compiled {entry['glue_bytes_ratio_compiled']}), fast FLOPs ratio {entry['fast_flops_ratio']:.2f}, "
            f"peak {entry['predicted_peak_gib']:.2f} GiB, compile parity {entry['compile_parity_max_abs']} "
            f"({entry['seconds']:.0f} s)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, help="where to write the results")
    p.add_argument("--tiny", action="store_true", help="tiny networks at tiny sizes (seconds)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--skip", nargs="*", default=[], choices=["graph_breaks", "compile", "compiled"],
                   help="leave out the slowest counts (reported as null)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = run(args.workloads, args.tiny, skip=args.skip)
    data["seconds"] = time.perf_counter() - t0
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    print(f"[static] wrote {path} ({data['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

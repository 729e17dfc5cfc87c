"""Glue bytes of a U-Net call with its blocks compiled by inductor, counted on the CPU (issue 21).

``compile="auto"`` turns regional ``torch.compile`` on for long clips on a GPU
(:mod:`uav.compilation`): every block class of :func:`uav.compilation.regions` runs as
inductor's kernels, which fuse what no aten operation fuses (a GroupNorm's statistics,
normalisation and SiLU; a residual add into the kernel before it). :func:`compiled_glue`
counts what those kernels read and write, without a GPU and without running them:

* the U-Net is built and called on *fake* tensors at real size (shapes, no storage), its
  region blocks compiled through a counting backend: inductor lowers and schedules each
  graph (fusion decided, kernel source generated), the bytes of every scheduled kernel
  that is not a convolution, matmul or attention are added up (inductor's own
  ``get_read_write_buffers_sizes``, what ``torch._inductor.metrics.num_bytes_accessed``
  sums), and the graph then runs eagerly on the fake tensors (nothing is compiled to
  machine code, so a real-size network takes seconds);
* the glue outside every region (the U-Net's input concatenation, the skip concatenations,
  the output GroupNorm) stays eager in a regional compile: it is counted by
  :class:`benchmarks.dispatch.GlueBytes` as in the eager count.

The schedule counted is inductor's C++ (CPU) one: fake CUDA tensors would need a GPU to
generate Triton kernels. It fuses these element-wise and reduction patterns as the Triton
one does; a GPU may add a few small split-reduction buffers. Attention runs as one fused
kernel, an opaque operation to inductor as the GPU's flash kernels are (:func:`opaque_attention`:
its inputs stay live, so the norms and projections that feed it are counted).
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections import Counter
from typing import Any, Callable, Iterator

import torch

from benchmarks.dispatch import COMPUTE_OPS, GlueBytes, count

__all__ = ["InductorBytes", "compiled_glue", "opaque_attention"]


def _attention_output(query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Fused attention's output shape and memory order: ``(B, heads, L, E)`` stored ``(B, L, heads, E)``."""
    shape = query.shape[:-1] + value.shape[-1:]
    if query.dim() == 4:
        return torch.empty_permuted(shape, (0, 2, 1, 3), dtype=query.dtype, device=query.device)
    return query.new_empty(shape)


@torch.library.custom_op("uav_bench::attention", mutates_args=())
def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
               scale: float | None) -> torch.Tensor:
    """A stand-in for fused attention: the output's shape and layout (values are never read here)."""
    return _attention_output(query, value)


@_attention.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
      scale: float | None) -> torch.Tensor:
    return _attention_output(query, value)


@contextlib.contextmanager
def opaque_attention() -> Iterator[None]:
    """SDPA as one opaque operation (a library kernel to inductor, like the GPU's flash attention)."""
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    def fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **_: Any) -> torch.Tensor:
        return torch.ops.uav_bench.attention(query, key, value, attn_mask, scale)

    F.scaled_dot_product_attention = fused  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real  # type: ignore[assignment]


class _Counted(Exception):
    """Raised once a graph's kernels are scheduled and counted: nothing is compiled further."""


def _compute_kernel(node: Any) -> bool:
    """Whether a scheduled node is a convolution, matmul or attention (an extern library call)."""
    from torch._inductor import scheduler

    if not isinstance(node, scheduler.ExternKernelSchedulerNode):
        return False
    name = str(getattr(node.node, "python_kernel_name", "") or "")
    if "uav_bench.attention" in name:
        return True
    name = name.rsplit(".", 1)[-1]
    return any(name == op or name.startswith(op) or name.startswith("_" + op) for op in COMPUTE_OPS)


class InductorBytes:
    """A ``torch.compile`` backend factory that counts the glue bytes of inductor's kernels.

    ``backend(name)`` is a backend for one block class; every call of a graph it compiled
    adds that graph's glue bytes to ``by_class[name]`` (a graph serves every block of its
    class and shape, so the count is per call, not per compile).
    """

    def __init__(self) -> None:
        self.by_class: Counter[str] = Counter()
        self.graphs = 0

    @property
    def total(self) -> int:
        return sum(self.by_class.values())

    def backend(self, name: str) -> Callable[..., Any]:
        return functools.partial(self._compile, name)

    def _compile(self, name: str, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        from torch._inductor import config
        from torch._inductor.compile_fx import compile_fx
        from torch._inductor.graph import GraphLowering

        found: list[int] = []

        def schedule_and_count(graph: GraphLowering) -> Any:
            graph.codegen()  # lowering, fusion and kernel source; no compiler runs
            found.append(sum(n.get_read_write_buffers_sizes() for n in graph.scheduler.nodes
                             if not _compute_kernel(n)))
            raise _Counted()

        real = GraphLowering.compile_to_module
        GraphLowering.compile_to_module = schedule_and_count  # type: ignore[method-assign]
        try:
            with config.patch(fx_graph_cache=False):
                compile_fx(gm, example_inputs)
        except Exception as exc:  # inductor may wrap the stop signal
            if not _caused_by_counted(exc):
                raise
        finally:
            GraphLowering.compile_to_module = real  # type: ignore[method-assign]
        if len(found) != 1:
            raise RuntimeError(f"{name}: inductor scheduled {len(found)} graphs for one region, expected 1")
        self.graphs += 1
        moved = found[0]

        def run(*args: Any) -> Any:
            self.by_class[name] += moved
            return gm.forward(*args)

        return run


def _caused_by_counted(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, _Counted):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def _regions_compiled(model: torch.nn.Module, counter: InductorBytes) -> Iterator[None]:
    """``model``'s region blocks compiled through ``counter``'s backend while the block runs."""
    import torch._dynamo

    from uav.compilation import _region_modules

    compiled: dict[type, Any] = {}
    blocks = _region_modules(model)
    try:
        for block in blocks:
            cls = type(block)
            if cls not in compiled:
                compiled[cls] = torch.compile(cls.forward, backend=counter.backend(cls.__name__), dynamic=False)
            block.forward = types.MethodType(compiled[cls], block)  # type: ignore[method-assign]
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
        torch._dynamo.reset()


def compiled_glue(model: torch.nn.Module, call: Callable[[], Any]) -> dict[str, Any]:
    """Glue bytes of ``call()`` (which calls ``model`` on fake tensors) with ``model``'s regions
    compiled: ``total`` = inductor's region kernels + the eager glue outside the regions."""
    import torch._dynamo

    from uav.compilation import regions

    counter = InductorBytes()
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 128)  # one graph per block class and shape
    try:
        with _regions_compiled(model, counter), opaque_attention(), torch.no_grad():
            call()
    finally:
        torch._dynamo.config.recompile_limit = limit
    eager = count(functools.partial(GlueBytes, regions()), call)
    return {"total": counter.total + eager.outside, "regions": counter.total, "outside": eager.outside,
            "by_class": dict(counter.by_class), "graphs": counter.graphs}

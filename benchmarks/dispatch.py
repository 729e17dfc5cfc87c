"""Dispatch-level counters for the static (CPU) proof of issue 21: host syncs, glue bytes.

Both are :class:`~torch.utils._python_dispatch.TorchDispatchMode` s, so they see every
aten operation a network runs, on real tensors or on the *fake* ones the memory model
traces (:func:`fake_networks`: shapes and dtypes on a fake CUDA device, no storage, no
compute), which is how a real-size U-Net call is measured on a CPU in seconds.

* :class:`SyncCounter` counts the operations that make the host wait for a CUDA device:
  reading a value back (``aten._local_scalar_dense``: ``.item()``, ``bool(t)``, ``int(t)``),
  ``aten.nonzero`` and every other operation whose output shape depends on the data, and
  blocking copies from the device to the host. Under fake tensors a value read returns a
  placeholder (``True`` / 1), so the traced code goes on and every read is counted.
* :class:`GlueBytes` adds up the bytes every operation reads and writes, except
  convolutions, matmuls and attention: what the element-wise, normalisation, layout and
  copy kernels move. Views cost nothing; an in-place operation reads and writes its
  target once.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any, Callable, Iterator, Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_iter

__all__ = ["SyncCounter", "GlueBytes", "fake_networks", "fused_attention", "flop_counter", "COMPUTE_OPS"]

aten = torch.ops.aten

#: operations whose output size depends on tensor values (the host must read them first)
DATA_DEPENDENT = {"nonzero", "nonzero_static", "masked_select", "unique", "_unique", "_unique2", "unique_dim",
                  "unique_consecutive", "repeat_interleave"}
#: what :class:`GlueBytes` leaves out: convolutions, matmuls (their epilogue inputs included) and attention
COMPUTE_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product", "scaled_dot_product",
               "_flash_attention", "_efficient_attention", "addmv", "dot")


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_iter(tree) if isinstance(t, torch.Tensor)]


class SyncCounter(TorchDispatchMode):
    """Counts the operations that would make the host wait for the device (see module docstring).

    ``counts`` maps a reason (``"item"``, ``"nonzero"``, ``"device_to_host"`` ...) to how often
    it happened; ``total`` is their sum; ``where`` keeps a short stack of each (the caller's
    frames), to name the line that syncs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.where: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _count(self, reason: str) -> None:
        import traceback

        self.counts[reason] += 1
        frames = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename]
        self.where.append(f"{reason} at " + " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                                         for f in reversed(frames[-3:])))

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        ins = _tensors((args, kwargs))
        on_device = any(t.device.type != "cpu" for t in ins)
        if name in ("_local_scalar_dense", "item"):
            if on_device:
                self._count("item")
            if _is_fake(ins[0]):  # a fake tensor has no value to read: go on with a placeholder
                return True if ins[0].dtype == torch.bool else 1
        if name in DATA_DEPENDENT and on_device:
            self._count(name)
            if _is_fake(ins[0]):
                return _placeholder(func, args, kwargs)
        if name in ("_to_copy", "copy_", "to") and _device_to_host(name, args, kwargs):
            self._count("device_to_host")
        return func(*args, **kwargs)


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _placeholder(func: Any, args: Any, kwargs: Any) -> Any:
    """A stand-in result for a data-dependent op on fake tensors (shape as if every element counted)."""
    x = args[0]
    if func.overloadpacket.__name__.startswith("nonzero"):
        return x.new_zeros((x.numel(), x.dim()), dtype=torch.long)
    return x.new_empty((x.numel(),))


def _device_to_host(name: str, args: Any, kwargs: Any) -> bool:
    """A copy from a device tensor into host memory that the host waits for (not ``non_blocking``)."""
    if name == "copy_":
        dst, src = args[0], args[1]
        blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        return src.device.type != "cpu" and dst.device.type == "cpu" and blocking
    src = args[0]
    dev = kwargs.get("device")
    blocking = not kwargs.get("non_blocking", False)
    return src.device.type != "cpu" and dev is not None and torch.device(dev).type == "cpu" and blocking


#: operations that only allocate: they move no bytes
ALLOCATIONS = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "empty_permuted"}


def _bound(schema: Any, args: Any, kwargs: Any) -> list[tuple[Any, Any]]:
    """``(schema argument, value)`` pairs of a call."""
    pairs = list(zip(schema, args))
    pairs += [(a, kwargs[a.name]) for a in schema[len(args):] if a.name in kwargs]
    return pairs


def _span(t: torch.Tensor) -> int:
    """Bytes of memory a tensor covers (a broadcast dimension, stride 0, counts once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


class GlueBytes(TorchDispatchMode):
    """Bytes read + written by every operation but convolutions, matmuls and attention.

    ``total`` is the sum; ``by_op`` splits it per aten operation (``add``, ``native_group_norm``,
    ``clone`` ...) and ``compute`` holds what the excluded operations moved, for scale.
    ``by_block`` splits the same bytes by the innermost running module of the library
    (a class defined in ``uav``: ``ResnetBlock3D``, ``BasicTransformerBlock`` ...; a
    ``torch.nn`` layer counts for the library block that called it, and what runs outside
    every block for ``-``), and ``by_block_op`` by ``"block/op"``: where the bytes go.
    With ``regions`` (module classes), ``outside`` counts the bytes moved while no module of
    those classes runs (what a regional compile leaves eager).
    """

    def __init__(self, regions: tuple[type, ...] = ()) -> None:
        super().__init__()
        self.regions = regions
        self.outside = 0
        self._depth = 0
        self.by_op: Counter[str] = Counter()
        self.compute: Counter[str] = Counter()
        self.by_block: Counter[str] = Counter()
        self.by_block_op: Counter[str] = Counter()
        self._blocks: list[str] = []
        self._hooks: list[Any] = []

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __enter__(self) -> "GlueBytes":
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        def enter(module: torch.nn.Module, args: Any) -> None:
            cls = type(module)
            self._blocks.append(cls.__name__ if cls.__module__.startswith("uav.") else "")
            self._depth += isinstance(module, self.regions)

        def leave(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self._blocks:
                self._blocks.pop()
            self._depth -= isinstance(module, self.regions)

        self._hooks = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave, always_call=True)]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        return super().__exit__(*exc)

    def _block(self) -> str:
        return next((b for b in reversed(self._blocks) if b), "-")

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema.arguments
        outs = _tensors(out)
        if not outs:  # an operator that returns nothing (a fused kernel) writes what it mutates
            outs = [v for a, v in _bound(schema, args, kwargs)
                    if isinstance(v, torch.Tensor) and a.alias_info is not None and a.alias_info.is_write]
        if not outs:
            return out
        name = func.overloadpacket.__name__
        if name in ALLOCATIONS:
            return out
        # an out= argument is only written (so is a mutated one named ``out``: custom operators
        # cannot take keyword-only tensors); an in-place target is read and written
        written_only = {id(v) for a, v in _bound(schema, args, kwargs)
                        if a.is_out or (a.name == "out" and a.alias_info is not None and a.alias_info.is_write)}
        ins = [t for t in _tensors((args, kwargs)) if id(t) not in written_only]
        storages = {t.untyped_storage()._cdata for t in ins}
        mutates = any(a.alias_info is not None and a.alias_info.is_write for a in schema)
        if not mutates and all(t.untyped_storage()._cdata in storages for t in outs):
            return out  # a view: no bytes move
        moved = sum(_span(t) for t in ins) + sum(_span(t) for t in outs)
        if any(name == op or name.startswith(op) for op in COMPUTE_OPS):
            self.compute[name] += moved
        else:
            self.by_op[name] += moved
            block = self._block()
            self.by_block[block] += moved
            self.by_block_op[f"{block}/{name}"] += moved
            if not self._depth:
                self.outside += moved
        return out


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """SDPA as the fused GPU kernels run it, on fake tensors: one output, in their ``(B, L, H, E)``
    memory order (a fake device cannot pick a kernel; the math fallback would add its own copies)."""
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    def fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        shape = query.shape[:-1] + value.shape[-1:]
        if query.dim() == 4:
            b, h, n, e = shape
            return query.new_empty((b, n, h, e)).transpose(1, 2)
        return query.new_empty(shape)

    F.scaled_dot_product_attention = fused  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real  # type: ignore[assignment]


@contextlib.contextmanager
def fake_networks(dtype: torch.dtype) -> Iterator[torch.device]:
    """Build and run networks on fake tensors (as :mod:`uav.memory` traces them), on a fake CUDA
    device, with fused attention; yields that device. Models built inside are in ``dtype``."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from uav.memory import _default_dtype

    with FakeTensorMode(allow_non_fake_inputs=True), fused_attention(), _default_dtype(dtype):
        yield torch.device("cuda", 0)


def fake_model(cls: Any, config: Mapping[str, Any], device: torch.device) -> Any:
    """``cls.from_config(config)`` built on ``device`` (call inside :func:`fake_networks`)."""
    with device:
        model = cls.from_config(dict(config))
    return model.eval().requires_grad_(False)


def count(mode_factory: Callable[[], TorchDispatchMode], call: Callable[[], Any]) -> TorchDispatchMode:
    """Run ``call()`` without autograd under a fresh ``mode_factory()`` and return the mode."""
    mode = mode_factory()
    with mode, torch.no_grad():
        call()
    return mode


def flop_counter() -> Any:
    """``FlopCounterMode`` that also counts the in-place matmuls the library accumulates residuals with."""
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_(self_shape: Any, a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * a[0] * a[1] * b[1]

    def baddbmm_(self_shape: Any, a: Any, b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * a[0] * a[1] * a[2] * b[2]

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={aten.addmm_: addmm_, aten.baddbmm_: baddbmm_})

"""The released weights folder: find it, describe it, load its networks (SPEC §1).

The published weights are distributed as a folder (``pretrained_models/upscale_a_video``)::

    unet/unet_video_config.json   unet/unet_video.bin        (or .safetensors)
    vae/vae_3d_config.json        vae/vae_3d.bin             (default decoder)
    vae/vae_video_config.json     vae/vae_video.bin          (temporal, LR-conditioned decoder)
    propagator/raft-things.pth                               (RAFT flow, for propagation)
    text_encoder/  tokenizer/  scheduler/  low_res_scheduler/  (diffusers format)

Every network loads strictly (every key fits, with its shape) from files that
:mod:`uav.weights.files` has checked (no pickle code runs; weights are floating point and
finite). A folder marked :data:`TINY_RANDOM_MARKER` holds random self-check networks:
loading its U-Net logs the self-check warning, so the Python API says so as loudly as the CLI.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import torch

from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.weights import checkpoint as ckpt
from uav.weights.files import REFUSED, ReleaseError, check_tensors, find_weights_file, is_refused_pickle, \
    load_state_dict_file
from uav.weights.sd_x4 import SD_X4_DDIM_CONFIG, SD_X4_DDPM_CONFIG, read_config

log = logging.getLogger(__name__)

VaeVariant = Literal["3d", "video"]

#: environment variable naming the default weights folder
WEIGHTS_ENV = "UAV_WEIGHTS"
#: the file that marks a folder of tiny random self-check networks
TINY_RANDOM_MARKER = "UAV_TINY_RANDOM_WEIGHTS"
#: what every run on random networks says
SELF_CHECK_NOTICE = "SELF-CHECK with a tiny RANDOM network — this output is NOT an upscale"
_ANNOUNCED: contextvars.ContextVar[bool] = contextvars.ContextVar("uav_self_check_announced", default=False)


@contextlib.contextmanager
def self_check_announced() -> Iterator[None]:
    """Loads inside this block do not log :data:`SELF_CHECK_NOTICE`: the caller has told the user
    already (the command line's banner), and saying it twice adds nothing."""
    token = _ANNOUNCED.set(True)
    try:
        yield
    finally:
        _ANNOUNCED.reset(token)
@dataclass(frozen=True)
class ReleaseFolder:
    """What a release folder provides (paths are ``None`` where a part is absent)."""

    root: Path
    unet_config: Path | None
    unet_weights: Path | None
    vae_configs: dict[str, Path] = field(default_factory=dict)
    vae_weights: dict[str, Path] = field(default_factory=dict)
    raft_weights: Path | None = None
    text_encoder: Path | None = None
    tokenizer: Path | None = None
    scheduler_config: Path | None = None
    low_res_scheduler_config: Path | None = None
    tiny_random: bool = False

    def missing(self, *, vae: VaeVariant = "3d", need_text: bool = True) -> list[str]:
        """Human-readable list of what is needed to upscale but absent."""
        out = []
        if self.unet_config is None:
            out.append("unet/unet_video_config.json")
        if self.unet_weights is None:
            out.append("unet/unet_video.bin (or .safetensors)")
        if vae not in self.vae_configs:
            out.append(f"vae/vae_{vae}_config.json")
        if vae not in self.vae_weights:
            out.append(f"vae/vae_{vae}.bin (or .safetensors)")
        if need_text and self.text_encoder is None:
            out.append("text_encoder/")
        if need_text and self.tokenizer is None:
            out.append("tokenizer/")
        return out

    def summary(self) -> dict[str, Any]:
        """Plain-data description (for ``uav weights`` / ``uav doctor``)."""
        def s(p: Path | None) -> str | None:
            return None if p is None else str(p)

        return {
            "root": str(self.root),
            "unet": s(self.unet_weights),
            "vae_3d": s(self.vae_weights.get("3d")),
            "vae_video": s(self.vae_weights.get("video")),
            "raft": s(self.raft_weights),
            "text_encoder": s(self.text_encoder),
            "tokenizer": s(self.tokenizer),
            "scheduler": s(self.scheduler_config),
            "low_res_scheduler": s(self.low_res_scheduler_config),
        }

    def holds(self) -> str:
        """What the folder holds, in words (``"tiny RANDOM self-check networks"``, ``"nothing: ..."``)."""
        return describe_folder(self.root)


def _scheduler_config(folder: Path) -> Path | None:
    p = folder / "scheduler_config.json"
    return p if p.is_file() else None


def find_release(path: str | os.PathLike[str]) -> ReleaseFolder:
    """Inspect a release folder (official layout); nothing is loaded.

    Raises:
        ReleaseError: ``path`` is not a folder.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ReleaseError(f"weights folder {root} does not exist (expected the Upscale-A-Video release layout)")
    unet_dir, vae_dir = root / "unet", root / "vae"
    vae_configs, vae_weights = {}, {}
    for variant in ("3d", "video"):
        cfg = vae_dir / f"vae_{variant}_config.json"
        if cfg.is_file():
            vae_configs[variant] = cfg
        w = find_weights_file(vae_dir, f"vae_{variant}")
        if w is not None:
            vae_weights[variant] = w
    unet_cfg = unet_dir / "unet_video_config.json"
    return ReleaseFolder(
        root=root,
        unet_config=unet_cfg if unet_cfg.is_file() else None,
        unet_weights=find_weights_file(unet_dir, "unet_video"),
        vae_configs=vae_configs,
        vae_weights=vae_weights,
        raft_weights=find_weights_file(root / "propagator", "raft-things"),
        text_encoder=(root / "text_encoder") if (root / "text_encoder").is_dir() else None,
        tokenizer=(root / "tokenizer") if (root / "tokenizer").is_dir() else None,
        scheduler_config=_scheduler_config(root / "scheduler"),
        low_res_scheduler_config=_scheduler_config(root / "low_res_scheduler"),
        tiny_random=is_tiny_random(root),
    )


def default_weights_dirs() -> list[Path]:
    """Where weights are looked for, in order: ``$UAV_WEIGHTS``, ``./pretrained_models/upscale_a_video``,
    ``~/.cache/uav/upscale_a_video``."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    dirs.append(Path("pretrained_models") / "upscale_a_video")
    dirs.append(Path.home() / ".cache" / "uav" / "upscale_a_video")
    return dirs


def locate_weights() -> Path | None:
    """The first default folder that holds a loadable U-Net, or ``None``."""
    for d in default_weights_dirs():
        if d.is_dir() and find_release(d).unet_weights is not None:
            return d
    return None




def is_tiny_random(path: str | os.PathLike[str]) -> bool:
    """Whether a weights folder is a self-check folder of random networks (:data:`TINY_RANDOM_MARKER`)."""
    return (Path(path) / TINY_RANDOM_MARKER).is_file()


def describe_folder(path: str | os.PathLike[str]) -> str:
    """What a candidate weights folder holds, in words, for messages (nothing is loaded).

    For example ``"real weights (a complete Upscale-A-Video release)"``, ``"tiny RANDOM
    self-check networks"``, ``"nothing (an empty folder)"``, or ``"no Upscale-A-Video weights
    (notes.txt, photos/)"``.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        return "nothing (no such folder)"
    if is_tiny_random(root):
        return "tiny RANDOM self-check networks"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not entries:
        return "nothing (an empty folder)"
    rel = find_release(root)
    found = [k for k, v in rel.summary().items() if k != "root" and v is not None]
    if not found:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        return f"no Upscale-A-Video weights ({shown})"
    missing = rel.missing(vae="3d") if "vae_video" not in found else rel.missing(vae="video")
    if missing:
        return f"part of an Upscale-A-Video release (has {', '.join(found)}; missing {', '.join(missing)})"
    return "real weights (a complete Upscale-A-Video release)"


# ---------------------------------------------------------------------------- loading networks
def _release(release: ReleaseFolder | str | os.PathLike[str]) -> ReleaseFolder:
    return release if isinstance(release, ReleaseFolder) else find_release(release)


def _place(model: torch.nn.Module, device: str | torch.device | None, dtype: torch.dtype | None) -> None:
    model.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        # plain Module.to: diffusers' override warns about "modules to keep in float32",
        # which these models do not have
        torch.nn.Module.to(model, device=device, dtype=dtype)


def _build(cls: Any, config_path: Path) -> Any:
    config = read_config(config_path)
    try:
        return cls.from_config(config)
    except Exception as exc:  # a config from elsewhere: name the file, not the constructor's internals
        raise ReleaseError(f"config {config_path} does not describe a {cls.__name__}: {_summary(exc)}") from exc


def load_unet(release: ReleaseFolder | str | os.PathLike[str], *, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None, warn_random: bool = True) -> UNetVideoModel:
    """Build the U-Net from the release config and load its weights strictly.

    A tiny random self-check folder logs :data:`SELF_CHECK_NOTICE` as a warning (unless
    ``warn_random`` is False), since everything it produces is noise.
    """
    rel = _release(release)
    if rel.unet_config is None or rel.unet_weights is None:
        raise ReleaseError(f"{rel.root}: missing " + ", ".join(m for m in rel.missing(need_text=False) if "unet" in m))
    model = _build(UNetVideoModel, rel.unet_config)
    ckpt.load_official_state_dict(model, load_state_dict_file(rel.unet_weights), source=str(rel.unet_weights))
    _place(model, device, dtype)
    if rel.tiny_random and warn_random and not _ANNOUNCED.get():
        log.warning("%s (%s holds tiny random networks made for self-checks)", SELF_CHECK_NOTICE, rel.root)
    return model


def load_vae(release: ReleaseFolder | str | os.PathLike[str], variant: VaeVariant = "3d", *,
             device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> AutoencoderKLVideo:
    """Build one of the two released VAEs (``"3d"`` default, ``"video"``) and load it strictly."""
    if variant not in ("3d", "video"):
        raise ValueError(f"vae: expected '3d' or 'video', got {variant!r}")
    rel = _release(release)
    if variant not in rel.vae_configs or variant not in rel.vae_weights:
        raise ReleaseError(f"{rel.root}: missing vae/vae_{variant}_config.json or vae/vae_{variant}.bin")
    model = _build(AutoencoderKLVideo, rel.vae_configs[variant])
    state = ckpt.legacy_vae_attention_names(load_state_dict_file(rel.vae_weights[variant]))
    ckpt.load_official_state_dict(model, state, source=str(rel.vae_weights[variant]))
    _place(model, device, dtype)
    return model


def load_schedulers(release: ReleaseFolder | str | os.PathLike[str]) -> tuple[Any, Any]:
    """``(DDIMScheduler, DDPMScheduler)`` from ``scheduler/`` and ``low_res_scheduler/``.

    Missing folders fall back to the SD x4 upscaler configs (SPEC §5.1), which the
    release is presumed to copy. A config that diffusers cannot build a scheduler from
    is a :class:`ReleaseError` naming the file.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    rel = _release(release)
    out = []
    for cls, path, default in ((DDIMScheduler, rel.scheduler_config, SD_X4_DDIM_CONFIG),
                               (DDPMScheduler, rel.low_res_scheduler_config, SD_X4_DDPM_CONFIG)):
        config = read_config(path) if path is not None else dict(default)
        try:
            # a throw-away copy walks a short schedule: bad betas or step counts fail here, not mid-run
            cls.from_config(config).set_timesteps(2)
        except Exception as exc:
            raise ReleaseError(f"scheduler config {path} does not describe a {cls.__name__}: "
                               f"{_summary(exc)}") from exc
        out.append(cls.from_config(config))
    return out[0], out[1]


def load_text_encoder(release: ReleaseFolder | str | os.PathLike[str], *, device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """``(tokenizer, text_encoder)`` (CLIP) from the release's diffusers-format folders.

    transformers reads ``.bin`` files with ``weights_only`` too; a refused pickle, a damaged
    file or non-finite weights are a :class:`ReleaseError` naming the folder.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    rel = _release(release)
    if rel.tokenizer is None or rel.text_encoder is None:
        raise ReleaseError(
            f"{rel.root}: missing tokenizer/ or text_encoder/ (needed to encode prompts; pass prompt_embeds "
            "and negative_prompt_embeds to run without them)"
        )
    tokenizer = _from_pretrained(CLIPTokenizer, rel.tokenizer)
    encoder = _from_pretrained(CLIPTextModel, rel.text_encoder)
    check_tensors(encoder.state_dict(), rel.text_encoder)
    _place(encoder, device, dtype)
    return tokenizer, encoder


def _from_pretrained(cls: Any, folder: Path) -> Any:
    try:
        return cls.from_pretrained(str(folder))
    except Exception as exc:  # the folder is the user's input: every failure to read it is theirs to fix
        if is_refused_pickle(exc):
            raise ReleaseError(f"{folder}: {REFUSED} (it holds pickled objects besides tensors; nothing was run)") \
                from exc
        raise ReleaseError(f"cannot load {folder}: {_summary(exc)}") from exc


def _summary(exc: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, shortened: library errors can run to pages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."

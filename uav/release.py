"""The released weights folder: find it, validate it, load it, convert it (SPEC §1).

The published weights are distributed as a folder (``pretrained_models/upscale_a_video``)::

    unet/unet_video_config.json   unet/unet_video.bin        (or .safetensors)
    vae/vae_3d_config.json        vae/vae_3d.bin             (default decoder)
    vae/vae_video_config.json     vae/vae_video.bin          (temporal, LR-conditioned decoder)
    propagator/raft-things.pth                               (RAFT flow, for propagation)
    text_encoder/  tokenizer/  scheduler/  low_res_scheduler/  (diffusers format)

``.bin``/``.pth`` files are read with ``torch.load(weights_only=True)`` only: no pickle
code ever runs. :func:`convert_to_safetensors` writes ``.safetensors`` next to them.
The image-only ``stabilityai/stable-diffusion-x4-upscaler`` diffusers layout loads
into the video U-Net with :func:`load_image_unet` (temporal layers new, identity).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import torch

from uav.models import AutoencoderKLVideo, UNetVideoModel
from uav.models import checkpoint as ckpt

Tensor = torch.Tensor
VaeVariant = Literal["3d", "video"]

#: environment variable naming the default weights folder
WEIGHTS_ENV = "UAV_WEIGHTS"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class ReleaseError(ValueError):
    """A weights folder that is missing something or holds something unusable."""


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


def _weights_file(folder: Path, stem: str) -> Path | None:
    for suffix in _WEIGHT_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _scheduler_config(folder: Path) -> Path | None:
    p = folder / "scheduler_config.json"
    return p if p.is_file() else None


def find_release(path: str | os.PathLike[str]) -> ReleaseFolder:
    """Inspect a release folder (official layout). Raises :class:`ReleaseError` if it is not a folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ReleaseError(f"weights folder {root} does not exist (expected the Upscale-A-Video release layout)")
    unet_dir, vae_dir = root / "unet", root / "vae"
    vae_configs, vae_weights = {}, {}
    for variant in ("3d", "video"):
        cfg = vae_dir / f"vae_{variant}_config.json"
        if cfg.is_file():
            vae_configs[variant] = cfg
        w = _weights_file(vae_dir, f"vae_{variant}")
        if w is not None:
            vae_weights[variant] = w
    unet_cfg = unet_dir / "unet_video_config.json"
    return ReleaseFolder(
        root=root,
        unet_config=unet_cfg if unet_cfg.is_file() else None,
        unet_weights=_weights_file(unet_dir, "unet_video"),
        vae_configs=vae_configs,
        vae_weights=vae_weights,
        raft_weights=_weights_file(root / "propagator", "raft-things"),
        text_encoder=(root / "text_encoder") if (root / "text_encoder").is_dir() else None,
        tokenizer=(root / "tokenizer") if (root / "tokenizer").is_dir() else None,
        scheduler_config=_scheduler_config(root / "scheduler"),
        low_res_scheduler_config=_scheduler_config(root / "low_res_scheduler"),
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


# ---------------------------------------------------------------------------- raw state dicts
def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file, or a ``.bin``/``.pth`` through ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise ReleaseError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / pickled code: say which file
        raise ReleaseError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ReleaseError(f"weights file {path} does not hold a state dict of tensors")
    return dict(obj)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"cannot read config {path}: {exc}") from exc


def _place(model: torch.nn.Module, device: str | torch.device | None, dtype: torch.dtype | None) -> None:
    model.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        # plain Module.to: diffusers' override warns about "modules to keep in float32",
        # which these models do not have
        torch.nn.Module.to(model, device=device, dtype=dtype)


def load_unet(release: ReleaseFolder | str | os.PathLike[str], *, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None) -> UNetVideoModel:
    """Build the U-Net from the release config and load its weights strictly."""
    rel = release if isinstance(release, ReleaseFolder) else find_release(release)
    if rel.unet_config is None or rel.unet_weights is None:
        raise ReleaseError(f"{rel.root}: missing " + ", ".join(m for m in rel.missing(need_text=False) if "unet" in m))
    model = UNetVideoModel.from_config(_read_config(rel.unet_config))
    ckpt.load_official_state_dict(model, load_state_dict_file(rel.unet_weights), source=str(rel.unet_weights))
    _place(model, device, dtype)
    return model


def load_vae(release: ReleaseFolder | str | os.PathLike[str], variant: VaeVariant = "3d", *,
             device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> AutoencoderKLVideo:
    """Build one of the two released VAEs (``"3d"`` default, ``"video"``) and load it strictly."""
    if variant not in ("3d", "video"):
        raise ValueError(f"vae: expected '3d' or 'video', got {variant!r}")
    rel = release if isinstance(release, ReleaseFolder) else find_release(release)
    if variant not in rel.vae_configs or variant not in rel.vae_weights:
        raise ReleaseError(f"{rel.root}: missing vae/vae_{variant}_config.json or vae/vae_{variant}.bin")
    model = AutoencoderKLVideo.from_config(_read_config(rel.vae_configs[variant]))
    state = ckpt.legacy_vae_attention_names(load_state_dict_file(rel.vae_weights[variant]))
    ckpt.load_official_state_dict(model, state, source=str(rel.vae_weights[variant]))
    _place(model, device, dtype)
    return model


def load_schedulers(release: ReleaseFolder | str | os.PathLike[str]) -> tuple[Any, Any]:
    """``(DDIMScheduler, DDPMScheduler)`` from ``scheduler/`` and ``low_res_scheduler/``.

    Missing folders fall back to the SD x4 upscaler configs (SPEC §5.1), which the
    release is presumed to copy.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    rel = release if isinstance(release, ReleaseFolder) else find_release(release)
    ddim_cfg = _read_config(rel.scheduler_config) if rel.scheduler_config else dict(SD_X4_DDIM_CONFIG)
    ddpm_cfg = _read_config(rel.low_res_scheduler_config) if rel.low_res_scheduler_config else dict(SD_X4_DDPM_CONFIG)
    return DDIMScheduler.from_config(ddim_cfg), DDPMScheduler.from_config(ddpm_cfg)


def load_text_encoder(release: ReleaseFolder | str | os.PathLike[str], *, device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """``(tokenizer, text_encoder)`` (CLIP) from the release's diffusers-format folders."""
    from transformers import CLIPTextModel, CLIPTokenizer

    rel = release if isinstance(release, ReleaseFolder) else find_release(release)
    if rel.tokenizer is None or rel.text_encoder is None:
        raise ReleaseError(
            f"{rel.root}: missing tokenizer/ or text_encoder/ (needed to encode prompts; pass prompt_embeds "
            "and negative_prompt_embeds to run without them)"
        )
    tokenizer = CLIPTokenizer.from_pretrained(str(rel.tokenizer))
    encoder = CLIPTextModel.from_pretrained(str(rel.text_encoder))
    _place(encoder, device, dtype)
    return tokenizer, encoder


def check_raft_weights(path: str | os.PathLike[str]) -> int:
    """Validate ``propagator/raft-things.pth`` without building RAFT: it must read with
    ``weights_only`` and hold the ``module.``-prefixed RAFT-large tensors (feature, context
    and update networks). Returns the number of tensors. The ``raft`` flow plugin does the
    full strict mapping onto torchvision's RAFT when it loads the file."""
    state = load_state_dict_file(path)
    prefixes = ("module.fnet.", "module.cnet.", "module.update_block.")
    missing = [p for p in prefixes if not any(k.startswith(p) for k in state)]
    stray = [k for k in state if not k.startswith("module.")]
    if missing or stray:
        raise ReleaseError(
            f"{path} is not the release's RAFT checkpoint: missing {missing or 'nothing'}, "
            f"keys without the DataParallel 'module.' prefix: {stray[:3] or 'none'}"
        )
    return len(state)


#: the SD x4 upscaler scheduler configs (SPEC §5.1)
SD_X4_DDIM_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler", "beta_end": 0.02, "beta_schedule": "scaled_linear", "beta_start": 0.0001,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None,
}
SD_X4_DDPM_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "scaled_linear", "beta_start": 0.0001,
    "clip_sample": True, "num_train_timesteps": 1000, "prediction_type": "epsilon", "trained_betas": None,
    "variance_type": "fixed_small",
}


# ---------------------------------------------------------------------------- writing & converting
def save_state_dict(state: Mapping[str, Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a state dict (``.safetensors`` or ``.bin``) under a temporary name, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, tmp)
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def convert_to_safetensors(path: str | os.PathLike[str], *, remove_original: bool = False) -> list[Path]:
    """Write ``.safetensors`` beside each ``.bin``/``.pth`` of a release folder; returns the new files.

    Each converted file is read back and compared tensor by tensor before an original
    is removed (only when asked).
    """
    from safetensors.torch import load_file

    rel = find_release(path)
    sources = [p for p in [rel.unet_weights, *rel.vae_weights.values(), rel.raft_weights] if p is not None]
    written = []
    for src in sources:
        if src.suffix == ".safetensors":
            continue
        dst = src.with_suffix(".safetensors")
        state = load_state_dict_file(src)
        save_state_dict(state, dst)
        back = load_file(str(dst))
        if set(back) != set(state) or any(not torch.equal(back[k], state[k].cpu()) for k in state):
            dst.unlink()
            raise ReleaseError(f"conversion of {src} did not read back identically; removed {dst}")
        written.append(dst)
        if remove_original:
            src.unlink()
    return written


def save_release(path: str | os.PathLike[str], *, unet: UNetVideoModel, vae: Mapping[str, AutoencoderKLVideo],
                 fmt: Literal["bin", "safetensors"] = "safetensors", raft_state: Mapping[str, Tensor] | None = None,
                 scheduler: Any = None, low_res_scheduler: Any = None) -> ReleaseFolder:
    """Write models into the official folder layout (for tests, fine-tunes and conversions)."""
    root = Path(path)
    (root / "unet").mkdir(parents=True, exist_ok=True)
    (root / "vae").mkdir(parents=True, exist_ok=True)
    (root / "unet" / "unet_video_config.json").write_text(json.dumps(dict(unet.config), indent=1, default=list))
    save_state_dict(unet.state_dict(), root / "unet" / f"unet_video.{fmt}")
    for variant, model in vae.items():
        (root / "vae" / f"vae_{variant}_config.json").write_text(json.dumps(dict(model.config), indent=1, default=list))
        save_state_dict(model.state_dict(), root / "vae" / f"vae_{variant}.{fmt}")
    if raft_state is not None:
        save_state_dict(raft_state, root / "propagator" / ("raft-things.pth" if fmt == "bin" else "raft-things.safetensors"))
    for name, sched in (("scheduler", scheduler), ("low_res_scheduler", low_res_scheduler)):
        if sched is not None:
            sched.save_config(str(root / name))
    return find_release(root)


# ---------------------------------------------------------------------------- image model -> video
def load_image_unet(source: str | os.PathLike[str] | Mapping[str, Tensor], config: Mapping[str, Any] | None = None,
                    **video_config: Any) -> UNetVideoModel:
    """Load the image-only SD x4 upscaler U-Net (diffusers layout) into a video U-Net.

    ``source`` is the model folder (``unet/`` of ``stabilityai/stable-diffusion-x4-upscaler``, holding
    ``config.json`` and ``diffusion_pytorch_model.{safetensors,bin}``), a hub id (when online), or a
    state dict together with its ``config``. The temporal layers are new and start as the identity,
    so a single-frame clip gives exactly the image model's output.
    """
    if isinstance(source, Mapping):
        if config is None:
            raise ValueError("config: the image U-Net's config dict is required with a state dict")
        state = dict(source)
    else:
        folder = Path(source)
        if not folder.exists():
            folder = _hub_snapshot(str(source), "unet")
        if (folder / "unet").is_dir():
            folder = folder / "unet"
        cfg_path = folder / "config.json"
        if config is None:
            config = _read_config(cfg_path)
        weights = _weights_file(folder, "diffusion_pytorch_model")
        if weights is None:
            raise ReleaseError(f"{folder}: no diffusion_pytorch_model.safetensors/.bin")
        state = load_state_dict_file(weights)
    video_cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    for key in ("attention_head_dim", "block_out_channels", "down_block_types", "up_block_types",
                "only_cross_attention"):
        if key in video_cfg and video_cfg[key] is not None and not isinstance(video_cfg[key], (int, bool)):
            video_cfg[key] = list(video_cfg[key])
    video_cfg["down_block_types"] = [t.replace("2D", "3D") for t in video_cfg["down_block_types"]]
    video_cfg["up_block_types"] = [t.replace("2D", "3D") for t in video_cfg["up_block_types"]]
    video_cfg.setdefault("down_temporal_idx", [0, 1, 2, 3])
    video_cfg.setdefault("mid_temporal", True)
    video_cfg.setdefault("up_temporal_idx", [0, 1, 2, 3])
    video_cfg.setdefault("temporal_module_config", {"attention_block_types": ["", ""]})
    video_cfg.update(video_config)
    if video_cfg.get("num_attention_heads") is not None:
        video_cfg["attention_head_dim"] = video_cfg["num_attention_heads"]
    import inspect

    accepted = set(inspect.signature(UNetVideoModel.__init__).parameters) - {"self"}
    model = UNetVideoModel.from_config({k: v for k, v in video_cfg.items() if k in accepted})
    ckpt.init_temporal_as_new(model)
    own = model.state_dict()
    spatial = {k for k in own if not ckpt.is_temporal_key(k) and not k.endswith(".rotary_emb.freqs")}
    missing = sorted(spatial - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ckpt.CheckpointKeyError(
            f"image U-Net does not fit the video U-Net's spatial part: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}"
        )
    bad = [f"{k}: {tuple(own[k].shape)} vs {tuple(v.shape)}" for k, v in state.items() if own[k].shape != v.shape]
    if bad:
        raise ValueError("image U-Net shapes do not fit: " + "; ".join(bad[:5]))
    model.load_state_dict(state, strict=False)
    model.eval().requires_grad_(False)
    return model


def _hub_snapshot(repo_id: str, subfolder: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"]))
    except Exception as exc:
        raise ReleaseError(
            f"{repo_id!r} is neither a local folder nor reachable on the hub ({type(exc).__name__}: {exc}). "
            "Download it where you have network access and pass the folder."
        ) from exc

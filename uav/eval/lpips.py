"""LPIPS (Zhang et al., CVPR 2018), the perceptual distance, through the optional ``lpips`` package.

Install it with the ``lpips`` extra (``pip install 'uav[lpips]'``). Nothing is
downloaded: the caller supplies the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from uav.eval.frames import per_frame

__all__ = ["LPIPSMetric", "LPIPS_MISSING"]

#: the one-line message when LPIPS is asked for and the package is absent
LPIPS_MISSING = ("LPIPS needs the optional package 'lpips', which is not installed: "
                 "pip install 'uav[lpips]' (or pip install lpips)")


class LPIPSMetric:
    """LPIPS (Zhang et al., CVPR 2018) through the optional ``lpips`` package.

    No weights are downloaded: the caller supplies them.

    Args:
        weights: a file saved with ``torch.save(lpips.LPIPS(net=net).state_dict(), path)``
            (backbone and linear layers together), or the ``lpips`` package's own
            linear-layer file (e.g. ``lpips/weights/v0.1/alex.pth``) together with
            ``backbone``.
        net: ``"alex"`` (the usual choice), ``"vgg"`` or ``"squeeze"``.
        backbone: a torchvision state dict of the matching backbone
            (e.g. ``alexnet-owt-7be5be79.pth``); needed only when ``weights`` lacks it.
        device: where to run the network.

    Raises:
        ImportError: the ``lpips`` package is not installed.
        FileNotFoundError: a weights file does not exist.
        ValueError: the weights do not fit the network.
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        net: str = "alex",
        backbone: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        try:
            import lpips  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ImportError(LPIPS_MISSING) from exc
        if net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"net: expected 'alex', 'vgg' or 'squeeze'; got {net!r}")
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"LPIPS weights: no such file {str(weights)!r}")
        # pnet_rand/pretrained=False keep lpips from downloading anything itself.
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        state = _load_state_dict(weights)
        if backbone is not None:
            backbone = Path(backbone)
            if not backbone.is_file():
                raise FileNotFoundError(f"LPIPS backbone: no such file {str(backbone)!r}")
            state = {**_map_backbone_keys(model, _load_state_dict(backbone)), **state}
        expected = set(model.state_dict())
        missing = sorted(k for k in expected if k not in state)
        if missing:
            if all(k.startswith("net.") for k in missing):
                raise ValueError(
                    f"LPIPS weights {str(weights)!r} hold no '{net}' backbone; pass the torchvision "
                    "backbone weights as backbone=... (--lpips-backbone) or save a full "
                    "lpips.LPIPS(...).state_dict()"
                )
            raise ValueError(f"LPIPS weights {str(weights)!r} do not fit net={net!r}; missing {missing[:4]}")
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def frames(self, output: np.ndarray, reference: np.ndarray, *, crop_border: int = 0) -> np.ndarray:
        """Per-frame LPIPS distance (lower is better), float64 array of length T."""
        def distance(a: np.ndarray, b: np.ndarray) -> float:
            ta = torch.from_numpy(a / 127.5 - 1.0).permute(2, 0, 1)[None].float().to(self.device)
            tb = torch.from_numpy(b / 127.5 - 1.0).permute(2, 0, 1)[None].float().to(self.device)
            return float(self.model(ta, tb).mean())

        return per_frame(output, reference, distance, crop_border=crop_border)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict")
    return state


def _map_backbone_keys(model: torch.nn.Module, backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision ``features.<i>.*`` keys to lpips' ``net.slice<k>.<i>.*``.

    lpips keeps torchvision's layer index as the child name inside each slice, so
    the mapping can be read off the model itself.
    """
    where: dict[str, str] = {}
    for slice_name, child in model.net.named_children():
        for idx, _ in child.named_children():
            where[idx] = f"net.{slice_name}.{idx}"
    mapped = {}
    for key, value in backbone.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[1] in where:
            mapped[f"{where[parts[1]]}.{parts[2]}"] = value
    return mapped

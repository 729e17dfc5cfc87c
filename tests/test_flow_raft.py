"""The ``raft`` flow estimator: official checkpoint key names, end-to-end run, resizing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from uav.protocols import FlowEstimator
from uav.registry import Registry

KEYS_FILE = Path(__file__).parent / "data" / "parity" / "raft_things_keys.txt"


def _official_keys() -> list[tuple[str, list[int], str, str]]:
    rows = []
    for line in KEYS_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype, kind = line.split("\t")
        rows.append((key, [int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype, kind))
    return rows


def random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the release file's exact key names and shapes (the
    ``norm3`` aliases share their tensor with ``downsample.1``, as in the original)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape, dtype, _ in _official_keys():
        if dtype == "int64":
            sd[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) > 1:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            sd[key] = torch.randn(shape, generator=g) / fan_in**0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    for key in list(sd):
        if ".norm3." in key:
            sd[key] = sd[key.replace(".norm3.", ".downsample.1.")]
    return sd


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    return random_official_state_dict()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, official_sd) -> Path:
    path = tmp_path_factory.mktemp("raft") / "raft-things.pth"
    torch.save(official_sd, path)
    return path


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def test_key_list_is_the_release_layout(official_sd):
    assert len(official_sd) == 179
    assert all(k.startswith("module.") for k in official_sd)


def test_official_keys_map_onto_torchvision_raft_large(official_sd):
    from torchvision.models.optical_flow import raft_large
    from uav_flow.raft import official_to_torchvision

    expected = raft_large(weights=None).state_dict()
    mapped = official_to_torchvision(official_sd)
    assert set(mapped) == set(expected)
    for key, value in expected.items():
        assert tuple(mapped[key].shape) == tuple(value.shape), key
    # Spot checks of the renaming, value for value.
    pairs = {
        "module.fnet.conv1.weight": "feature_encoder.convnormrelu.0.weight",
        "module.cnet.norm1.running_mean": "context_encoder.convnormrelu.1.running_mean",
        "module.cnet.layer2.0.norm2.weight": "context_encoder.layer2.0.convnormrelu2.1.weight",
        "module.cnet.layer3.0.norm3.bias": "context_encoder.layer3.0.downsample.1.bias",
        "module.fnet.conv2.weight": "feature_encoder.conv.weight",
        "module.update_block.encoder.convc1.weight": "update_block.motion_encoder.convcorr1.0.weight",
        "module.update_block.encoder.conv.bias": "update_block.motion_encoder.conv.0.bias",
        "module.update_block.gru.convq2.weight": "update_block.recurrent_block.convgru2.convq.weight",
        "module.update_block.gru.convz1.bias": "update_block.recurrent_block.convgru1.convz.bias",
        "module.update_block.mask.2.weight": "mask_predictor.conv.weight",
        "module.update_block.flow_head.conv2.bias": "update_block.flow_head.conv2.bias",
    }
    for official, tv in pairs.items():
        assert torch.equal(mapped[tv], official_sd[official]), official
    # Already-torchvision names pass through.
    assert official_to_torchvision(mapped).keys() == mapped.keys()


@pytest.mark.slow
def test_raft_loads_release_file_and_runs_end_to_end(registry, weights_file, official_sd):
    estimator = registry.get("flow", "raft", weights=weights_file)
    assert isinstance(estimator, FlowEstimator)
    assert estimator.iters == 20  # the published setting
    # Fewer iterations keep this CPU test quick; the loop itself is torchvision's.
    estimator.iters = 3
    loaded = estimator.model.state_dict()
    assert torch.equal(loaded["update_block.recurrent_block.convgru1.convr.weight"],
                       official_sd["module.update_block.gru.convr1.weight"])

    g = torch.Generator().manual_seed(1)
    frames = torch.rand(2, 3, 44, 60, generator=g) * 2 - 1
    forward, backward = estimator(frames)
    assert forward.shape == backward.shape == (1, 2, 1, 44, 60)
    assert forward.dtype == torch.float32
    assert torch.isfinite(forward).all() and torch.isfinite(backward).all()
    assert forward.abs().max() > 0  # random weights still give a non-trivial field


@pytest.mark.slow
def test_safetensors_and_state_dict_inputs(registry, tmp_path, official_sd):
    # safetensors refuses shared storage: store the aliases as copies.
    path = tmp_path / "raft-things.safetensors"
    save_file({k: v.clone().contiguous() for k, v in official_sd.items()}, str(path))
    a = registry.get("flow", "raft", weights=path)
    b = registry.get("flow", "raft", weights=official_sd)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


@pytest.mark.slow
def test_bad_checkpoints_are_rejected_naming_the_file(registry, tmp_path, official_sd):
    missing = dict(official_sd)
    del missing["module.update_block.mask.0.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(missing, path)
    with pytest.raises(ValueError, match=r"incomplete\.pth lack 1 RAFT-large parameter\(s\): mask_predictor\.convrelu\.0\.weight"):
        registry.get("flow", "raft", weights=path)

    extra = dict(official_sd)
    extra["module.fnet.extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(extra, path)
    with pytest.raises(ValueError, match=r"extra\.pth do not fit RAFT-large: .*module\.fnet\.extra\.weight"):
        registry.get("flow", "raft", weights=path)

    wrong = dict(official_sd)
    wrong["module.fnet.conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "wrong.pth"
    torch.save(wrong, path)
    with pytest.raises(ValueError, match=r"wrong\.pth have wrong shapes: feature_encoder\.convnormrelu\.0\.weight"):
        registry.get("flow", "raft", weights=path)

    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        registry.get("flow", "raft", weights=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="flow='dis'"):
        registry.get("flow", "raft")


class _ConstantFlowModel(torch.nn.Module):
    """Stands in for RAFT: records its inputs and returns a constant flow field."""

    def __init__(self, u: float, v: float) -> None:
        super().__init__()
        self.u, self.v = u, v
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def forward(self, image1, image2, num_flow_updates):
        self.inputs.append((image1, image2, num_flow_updates))
        n, _, h, w = image1.shape
        flow = torch.empty(n, 2, h, w)
        flow[:, 0], flow[:, 1] = self.u, self.v
        flow[n // 2 :] *= -1  # second half of the batch is the backward direction
        return [flow * 0.5, flow]  # RAFT returns every iteration; the last one counts


def test_inputs_are_fed_like_the_published_code_and_flows_rescaled_correctly(registry, weights_file):
    estimator = registry.get("flow", "raft", weights=weights_file)
    stub = _ConstantFlowModel(u=8.0, v=-4.0)
    estimator.model = stub
    g = torch.Generator().manual_seed(2)
    frames = torch.rand(4, 3, 130, 250, generator=g) * 2 - 1
    forward, backward = estimator(frames)

    # Sizes rounded up to multiples of 8, values in [-1, 1] unchanged (no /255, no
    # normalisation), 20 iterations, and both directions of every pair.
    image1, image2, iters = stub.inputs[0]
    assert iters == 20
    assert tuple(image1.shape[-2:]) == (136, 256)
    resized = torch.nn.functional.interpolate(frames, size=(136, 256), mode="bilinear", align_corners=False)
    n = image1.shape[0] // 2
    assert torch.allclose(image1[:n], resized[:n]) and torch.allclose(image2[:n], resized[1 : n + 1])
    assert torch.allclose(image1[n:], resized[1 : n + 1])

    # x scales with the width ratio and y with the height ratio (the published code
    # scales the wrong axes and leaves the vector lengths unchanged, SPEC §7.6).
    assert forward.shape == (1, 2, 3, 130, 250)
    assert torch.allclose(forward[0, 0], torch.full((3, 130, 250), 8.0 * 250 / 256))
    assert torch.allclose(forward[0, 1], torch.full((3, 130, 250), -4.0 * 130 / 136))
    assert torch.allclose(backward[0, 0], torch.full((3, 130, 250), -8.0 * 250 / 256))
    half, _ = estimator(frames, size=(65, 125))
    assert torch.allclose(half[0, 0], torch.full((3, 65, 125), 8.0 * 125 / 256))
    assert torch.allclose(half[0, 1], torch.full((3, 65, 125), -4.0 * 65 / 136))


def test_compute_size(registry, weights_file):
    estimator = registry.get("flow", "raft", weights=weights_file, iters=2)
    assert estimator.compute_size(360, 640) == (360, 640)
    assert estimator.compute_size(130, 250) == (136, 256)
    # torchvision's correlation pyramid needs >= 128 px a side.
    assert estimator.compute_size(44, 300) == (128, 304)
    with pytest.raises(ValueError, match="iters must be an int >= 1"):
        registry.get("flow", "raft", weights=weights_file, iters=0)

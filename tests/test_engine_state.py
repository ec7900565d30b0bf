"""Profiling leaves the model and the process exactly as they were: writes of the forward to the
model's own parameters and buffers undone, the random number generator's state restored, and
one model profiled from several threads at once gives every thread the right rows."""

from __future__ import annotations

import threading

import torch
from torch import nn

from pytest_netbudget import profile


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


class StepCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.fc(x)


class KVCache(nn.Module):
    """Appends each call's keys to a cache buffer at a position buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.key = nn.Linear(4, 4, bias=False)
        self.register_buffer("cache", torch.zeros(2, 8, 4))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start, length = int(self.position), x.shape[1]
        self.cache[:, start : start + length] = self.key(x)
        self.position.add_(length)
        return self.cache[:, : start + length].sum()


class ReassignedBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total = self.total + x.sum(0)  # replaces the buffer by assignment
        return self.total


def test_step_counter_buffer_is_restored():
    model = StepCounter()
    before = state_of(model)
    for device in ("cpu", "meta"):
        p = profile(model, torch.randn(3, 4), device=device)
        assert_same_state(model, before)
    assert p.flops == 1 + 2 * 3 * 4 * 4 + 3 * 4  # the counter's add, the linear layer and its bias


def test_key_value_cache_buffer_is_restored():
    model = KVCache()
    before = state_of(model)
    for _ in range(2):  # the second profile sees the first one's writes undone
        p = profile(model, torch.randn(2, 3, 4), device="cpu")
        assert p.macs == 2 * 3 * 4 * 4
        assert_same_state(model, before)


def test_embedding_max_norm_renormalisation_is_undone():
    """nn.Embedding(max_norm=1) rescales, in place, every looked-up row whose norm is above 1."""
    model = nn.Embedding(10, 4, max_norm=1.0)
    with torch.no_grad():
        model.weight.mul_(5)  # every row's norm is well above 1
    before = state_of(model)
    profile(model, torch.tensor([[1, 2, 3]]), device="cpu")
    assert_same_state(model, before)
    model(torch.tensor([[1, 2, 3]]))  # the write the profile undid
    assert not torch.equal(model.weight, before["weight"])


def test_buffer_replaced_by_assignment_is_put_back():
    model = ReassignedBuffer()
    total = model.total
    profile(model, torch.ones(3, 4), device="cpu")
    assert model.total is total and torch.equal(total, torch.zeros(4))


def test_random_number_generator_is_restored():
    """A random input (input_shape) and dropout in a training step draw from the global generator."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    profile(model, input_shape=(2, 4), device="cpu", train=True, optimizer="sgd")
    assert torch.equal(torch.rand(3), expected)


def test_one_model_profiled_from_several_threads():
    """Eight threads profile one model at once; each gets the rows of a profile run alone, and the
    model's modes are as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4), nn.Dropout()))
    model.train()
    model[2].eval()
    alone = profile(model, torch.randn(2, 8), device="cpu")
    expected = [(row.path, row.calls, row.macs, row.flops) for row in alone.layers]
    results: list = []

    def run() -> None:
        p = profile(model, torch.randn(2, 8), device="cpu")
        results.append([(row.path, row.calls, row.macs, row.flops) for row in p.layers])

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8
    assert [module.training for module in model.modules()] == [True, True, True, False, False, False]


class SetsProcessSettings(nn.Module):
    """A forward that changes process-wide torch settings (as some library code does)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_default_device("meta")
        return self.fc(x)


def test_process_wide_settings_a_forward_changes_are_put_back():
    """Default device and dtype, grad mode, deterministic algorithms and the thread count are as
    before the profile, also when the forward raised after changing them."""
    from pytest_netbudget.engine.state import PROCESS_SETTINGS

    before = [read() for _, read, _ in PROCESS_SETTINGS]
    try:
        profile(SetsProcessSettings(), torch.ones(1, 4), device="cpu")
        assert [read() for _, read, _ in PROCESS_SETTINGS] == before
        assert torch.empty(1).dtype == torch.float32 and torch.empty(1).device.type == "cpu"
    finally:  # never leave the settings changed for the rest of the suite, even when this fails
        for (_, read, write), value in zip(PROCESS_SETTINGS, before):
            if read() != value:
                write(value)


class Remembering(nn.Module):
    """A forward that assigns to its module in the ways real models do: a position table made on
    first use on the input's device, a call counter, the last input cached, a scale reassigned,
    a history list appended to, a plain tensor written in place and a buffer registered on first use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.pos = None
        self.calls = 0
        self.scale = 1.0
        self.history: list[int] = []
        self.running = torch.zeros(4)  # neither a parameter nor a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.pos is None:
            self.pos = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype)
        self.last = x.detach()
        self.scale = self.scale * 2
        self.history.append(self.calls)
        self.running.add_(x.sum(0))
        if "seen" not in self._buffers:
            self.register_buffer("seen", torch.ones(1, device=x.device))
        return self.fc(x) * self.scale + self.pos


def test_every_attribute_a_forward_assigns_is_put_back():
    """After each profile (cpu, meta, a training step) the module is as built: no meta position
    table (a plain CPU forward runs), the counter at 0, no cached input, the scale at 1, the same
    empty history list, the plain tensor at zeros, no buffer added. Every profile gives the figure
    of the first: on [3, 4], the linear layer 2*3*4*4 + 12 (bias) = 108 FLOPs, the scale's product
    12, the positions' sum 12, x.sum(0) 12 (1 per input element) and running.add_ 4: 148."""
    model = Remembering()
    history, running = model.history, model.running
    for device, train in (("cpu", False), ("meta", False), ("cpu", True), ("meta", True), ("cpu", False)):
        p = profile(model, torch.randn(3, 4), device=device, train=train, optimizer="sgd")
        assert p.flops == 148, (device, train)
        assert model.pos is None and model.calls == 0 and model.scale == 1.0, (device, train)
        assert model.history is history and history == [], (device, train)
        assert model.running is running and torch.equal(running, torch.zeros(4)), (device, train)
        assert not hasattr(model, "last") and "seen" not in model._buffers, (device, train)
    model(torch.randn(3, 4))  # the plain forward after a meta profile: a CPU position table
    assert model.pos.device.type == "cpu" and model.calls == 1


def test_attribute_replaced_and_container_emptied_are_put_back():
    """A forward that replaces a list attribute, empties a dict in place and deletes an attribute."""

    class Rewriting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.sizes = [1, 2]
            self.cache = {"a": torch.ones(1)}
            self.flag = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.sizes = [3]
            self.cache.clear()
            del self.flag
            return self.fc(x)

    model = Rewriting()
    sizes, cache, entry = model.sizes, model.cache, model.cache["a"]
    for device in ("cpu", "meta"):
        profile(model, torch.randn(1, 2), device=device)
        assert model.sizes is sizes and sizes == [1, 2]
        assert model.cache is cache and cache == {"a": entry} and model.flag is True


def _infer_scale(feature: torch.Tensor, image_size: tuple[int, int]) -> float:
    """The feature map's scale against the image, rounded to a power of 2, as torchvision's
    poolers infer it: log2 and round on a tensor for each of the two sizes."""
    scales = [
        2 ** float(torch.tensor(size / full).log2().round()) for size, full in zip(feature.shape[-2:], image_size)
    ]
    return scales[0]


class LevelMapper:
    """torchvision's LevelMapper: the pyramid level of each box from its area (FPN, eq. 1):
    floor(4 + log2(sqrt(area) / 224)), clamped to the levels the feature maps have."""

    def __init__(self, k_min: int, k_max: int) -> None:
        self.k_min, self.k_max = k_min, k_max

    def __call__(self, boxes: torch.Tensor) -> torch.Tensor:
        side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        level = torch.floor(4 + torch.log2(side / 224) + 1e-6)
        return torch.clamp(level, min=self.k_min, max=self.k_max).to(torch.int64) - self.k_min


class MultiScalePooler(nn.Module):
    """The pattern of torchvision's MultiScaleRoIAlign (torchvision has no usable build here):
    ``scales`` and ``map_levels`` are None until the first forward works them out from the
    feature maps' sizes and keeps them. The pooling is a mean per map, taken at each box's level."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.image_size = image_size
        self.scales: list[float] | None = None
        self.map_levels: LevelMapper | None = None

    def forward(self, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        if self.scales is None:
            self.scales = [_infer_scale(feature, self.image_size) for feature in features]
            lowest = -torch.log2(torch.tensor(self.scales[0])).item()
            highest = -torch.log2(torch.tensor(self.scales[-1])).item()
            self.map_levels = LevelMapper(int(lowest), int(highest))
        levels = self.map_levels(boxes)
        pooled = torch.stack([feature.mean(dim=(2, 3)) for feature in features])  # [maps, 1, C]
        return pooled[levels]


def test_multi_scale_pooler_scales_are_worked_out_by_every_profile():
    """Three maps of 4 channels, 16x16, 8x8 and 4x4, of a 64x64 image; 5 boxes. The first forward's
    setup: per map and size a log2 and a round (3 * 2 * 2 = 12), and a log2 for each of the lowest
    and highest levels (2; the minus sign applies to the Python float that .item() returns): 14. The level of each box: two subtractions, a product,
    sqrt, a division, log2, two additions, floor, clamp and the subtraction of k_min, 11 per box:
    55. The means: 1 per element of the maps, 4 * (256 + 64 + 16) = 1,344. In all 1,413, in every
    profile (torchvision's R-CNN gave 10 FLOPs fewer from its second profile on)."""
    model = MultiScalePooler((64, 64))
    features = [torch.randn(1, 4, size, size) for size in (16, 8, 4)]
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0, 0, 64, 64], [8, 8, 16, 16], [0, 0, 4, 60], [1, 2, 30, 40]])
    for device in ("cpu", "cpu", "meta", "meta"):
        p = profile(model, (features, boxes), device=device)
        assert p.flops == 14 + 11 * 5 + 4 * (256 + 64 + 16), device
        assert model.scales is None and model.map_levels is None
    assert model(features, boxes).shape == (5, 1, 4)
    assert model.scales == [0.25, 0.125, 0.0625]

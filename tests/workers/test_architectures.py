import pytest
import torch
from torch import nn

from layerforge.workers.architectures import ARCHITECTURES, build_model
from layerforge.workers.errors import InvalidConfigError, UnknownNameError
from tests.workers.helpers import TorchBNReLU, torch_factories

SHAPES = {"image": (1, 8, 8), "rgb": (3, 16, 16), "vector": (40,), "sequence": (3, 20)}


class Counting(nn.Module):
    count = 0

    def __init__(self, c):
        super().__init__()
        Counting.count += 1
        self.bn = TorchBNReLU(c)

    def forward(self, x):
        return self.bn(x)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("kind", ["activation", "normact"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_every_arch_accepts_every_modality(arch, kind, shape):
    f = torch_factories(kind)["relu" if kind == "activation" else "bn_relu"]
    model = build_model(arch, input_shape=shape, num_classes=7, kind=kind, layer_factory=f)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 7)
    out.sum().backward()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_candidate_replaces_every_site(arch):
    """activation: no nn.ReLU left; normact: candidate modules used, BN only where no act follows."""
    created = []

    def act(c):
        created.append(c)
        return nn.Hardtanh()

    m = build_model(
        arch,
        input_shape=(3, 16, 16),
        num_classes=10,
        kind="activation",
        layer_factory=act,
    )
    assert created and not any(isinstance(x, (nn.ReLU, nn.ReLU6)) for x in m.modules())
    Counting.count = 0
    m = build_model(
        arch,
        input_shape=(3, 16, 16),
        num_classes=10,
        kind="normact",
        layer_factory=Counting,
    )
    assert Counting.count > 0
    if arch in ("resnet", "mlp"):
        assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # every BN was paired


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gpu_scale_is_larger(arch):
    def f(c):
        return nn.ReLU()

    def size(s):
        return sum(
            p.numel()
            for p in build_model(
                arch,
                input_shape=(3, 32, 32),
                num_classes=10,
                kind="activation",
                layer_factory=f,
                scale=s,
            ).parameters()
        )

    assert size("gpu") > 2 * size("cpu")
    assert size(0.5) < size("gpu")


def test_unknown_architecture_names_valid_ones():
    with pytest.raises(UnknownNameError) as exc:
        build_model(
            "vgg",
            input_shape=(1, 8, 8),
            num_classes=10,
            kind="activation",
            layer_factory=lambda c: nn.ReLU(),
        )
    assert isinstance(exc.value, ValueError)
    for name in ARCHITECTURES:
        assert name in str(exc.value)


def test_bad_kind_and_scale():
    def f(c):
        return nn.ReLU()

    with pytest.raises(InvalidConfigError, match="kind"):
        build_model("mlp", input_shape=(4,), num_classes=3, kind="norm", layer_factory=f)
    with pytest.raises(InvalidConfigError, match="scale"):
        build_model(
            "mlp",
            input_shape=(4,),
            num_classes=3,
            kind="activation",
            layer_factory=f,
            scale="tpu",
        )

"""layerforge layers inside timm: through timm's own ``get_act_layer`` /
``create_act_layer`` / ``get_norm_act_layer`` and its building blocks (``ConvNormAct``,
``SqueezeExcite``), and whole timm models where timm imports.

timm is installed without its dependencies (``pip install --no-deps timm``: they include
torchvision, whose wheels pull a CUDA torch). ``import timm`` then fails on
``torchvision.datasets`` (timm.data), but ``timm.layers`` needs from torchvision only the
class ``torchvision.ops.misc.FrozenBatchNorm2d``, used by timm's batch-norm freezing helpers
that nothing here calls. Where torchvision is missing, the fixture puts a stand-in class under
that name and imports ``timm.layers`` from timm's own files, skipping ``timm/__init__``; the
code under test is timm's. Whole models need the real torchvision and run only where it
imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from layerforge.grammar import compile_graph, export, get_builtin, layer_factory, parse
from layerforge.integrations.timm import act_layer, norm_act_layer


def _torchvision_works() -> bool:
    try:
        import torchvision.ops  # noqa: F401 - imported only to see whether it loads
    except Exception:  # noqa: BLE001 - missing, or a build that does not match this torch
        return False
    return True


@pytest.fixture(scope="module")
def timm_layers():
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        pytest.skip("timm is not installed (make install runs pip install --no-deps timm)")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("timm", "torchvision")}
    if not _torchvision_works():

        class FrozenBatchNorm2d(nn.Module):
            """Stand-in for the one torchvision name timm.layers imports (never used here)."""

        for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc"):
            module = types.ModuleType(name)
            module.__path__ = []
            sys.modules[name] = module
        sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
        package = types.ModuleType("timm")
        package.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["timm"] = package
    try:
        yield importlib.import_module("timm.layers")
    finally:
        for name in [k for k in sys.modules if k.split(".")[0] in ("timm", "torchvision")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _load(tmp_path: Path, source: str, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_act_layer_through_timms_factories(timm_layers):
    cls = act_layer("x * sigmoid(x)")
    assert timm_layers.get_act_layer(cls) is cls
    module = timm_layers.create_act_layer(cls, inplace=True)
    x = torch.linspace(-4, 4, 33)
    torch.testing.assert_close(module(x), x * torch.sigmoid(x))
    assert x.equal(torch.linspace(-4, 4, 33))  # not in place
    assert module is not timm_layers.create_act_layer(cls)  # a fresh layer each time


def test_bare_norm_act_class_is_refused_by_timm_and_the_helper_is_not(timm_layers, tmp_path):
    exported = _load(tmp_path, export(get_builtin("evonorm_s0"), "pytorch", "EvoS0"), "evo_s0")
    with pytest.raises(AssertionError, match="No equivalent norm_act layer"):
        timm_layers.get_norm_act_layer(exported.EvoS0)
    fn = timm_layers.get_norm_act_layer(norm_act_layer(exported.EvoS0), nn.ReLU)
    layer = timm_layers.create_norm_act_layer(norm_act_layer(exported.EvoS0), 32, act_layer=nn.ReLU)
    assert isinstance(layer, exported.EvoS0) and layer.weight.shape == (32,)
    assert isinstance(fn(16), exported.EvoS0)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: "evonorm_b0",
        lambda tmp: get_builtin("evonorm_s0"),
        lambda tmp: layer_factory(get_builtin("gn_relu")),
        lambda tmp: compile_graph(get_builtin("evonorm_b0"), 8),
    ],
    ids=["builtin-name", "graph", "layer-factory", "compiled-module"],
)
def test_norm_act_layer_in_timms_conv_norm_act(timm_layers, tmp_path, make):
    block = timm_layers.ConvNormAct(3, 16, 3, norm_layer=norm_act_layer(make(tmp_path)))
    assert block.bn.weight.shape == (16,)
    y = block.train()(torch.randn(4, 3, 8, 8))
    assert y.shape == (4, 16, 8, 8) and torch.isfinite(y).all()
    plain = timm_layers.ConvNormAct(
        3, 16, 3, apply_act=False, norm_layer=norm_act_layer(make(tmp_path))
    )
    # apply_act=False reaches the layer: only its per-channel affine part is left
    assert plain.bn.apply_act is False
    conv_out = plain.conv(torch.randn(2, 3, 8, 8))
    expected = conv_out * plain.bn.weight.view(1, -1, 1, 1) + plain.bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(plain.bn(conv_out), expected)


def test_exported_activation_class_and_compiled_module_in_squeeze_excite(timm_layers, tmp_path):
    source = export(parse("max(x, tanh(x))", "activation"), "pytorch", "MaxTanh")
    exported = _load(tmp_path, source, "max_tanh")
    compiled = compile_graph(parse("max(x, tanh(x))", "activation"))
    x = torch.randn(2, 8, 5, 5)
    outputs = []
    for layer in (exported.MaxTanh, compiled):
        torch.manual_seed(0)
        se = timm_layers.SqueezeExcite(8, rd_ratio=0.5, act_layer=act_layer(layer))
        assert type(se.act).__name__ == "LayerforgeActivation"
        outputs.append(se(x))
    torch.testing.assert_close(outputs[0], outputs[1])


def test_wrong_space_is_named():
    with pytest.raises(Exception, match="normact layer; act_layer needs a activation layer"):
        act_layer("evonorm_b0")


@pytest.mark.skipif(
    not _torchvision_works(),
    reason="whole timm models import timm.data, which needs a torchvision that works with "
    "this torch (the registry's torchvision wheels here are CUDA builds)",
)
def test_whole_timm_models():
    import timm

    resnet = timm.create_model("resnet18", num_classes=10, act_layer=act_layer("x * sigmoid(x)"))
    assert resnet(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    effnet = timm.create_model(
        "efficientnet_b0", num_classes=10, norm_layer=norm_act_layer("evonorm_s0")
    )
    assert effnet(torch.randn(2, 3, 64, 64)).shape == (2, 10)

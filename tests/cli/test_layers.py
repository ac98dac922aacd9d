"""The layer commands (ops, builtins, show, export offline), registered on a local typer app."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from layerforge.cli.layers import register
from layerforge.grammar import BUILTINS, OPS, fingerprint, parse


@pytest.fixture()
def app():
    a = typer.Typer()
    register(a)
    return a


runner = CliRunner()


def test_ops_lists_every_op(app):
    res = runner.invoke(app, ["ops"])
    assert res.exit_code == 0, res.output
    for name in OPS:
        assert name in res.output
    assert re.search(r"lerp\s*│\s*3", res.output)


def test_builtins_lists_each_with_its_space_and_definition(app):
    res = runner.invoke(app, ["builtins"])
    assert res.exit_code == 0, res.output
    for name in BUILTINS:
        assert name in res.output
    normact = runner.invoke(app, ["builtins", "--space", "normact"])
    assert "evonorm_b0" in normact.output and "gelu" not in normact.output
    assert "std(x, batch)" in normact.output


def test_show(app):
    res = runner.invoke(app, ["show", "--expr", "sigmoid(x)*x"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "text: sigmoid(x) * x" in lines
    assert any(line.startswith("latex: ") and "e^{- x}" in line for line in lines)
    assert f"fingerprint: {fingerprint(parse('x * sigmoid(x)', 'activation'))}" in lines
    res = runner.invoke(
        app, ["show", "--expr", "x / std(x, group) * weight + bias", "--space", "normact"]
    )
    assert res.exit_code == 0 and "fingerprint: " in res.output


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["show", "--expr", "x + foo"], "unknown name 'foo' at position 4"),
        (["show", "--expr", "x", "--space", "conv"], "unknown space 'conv'"),
        (["export", "--builtin", "nope", "--format", "json"], "unknown built-in 'nope'"),
        (
            ["export", "--expr", "x", "--space", "activation", "--format", "onnx"],
            "unknown export format 'onnx'",
        ),
        (["export", "--expr", "x", "--format", "json"], "--space is required"),
        (["export", "--format", "json"], "or --expr / --builtin to export offline"),
        (["export", "--expr", "x", "--builtin", "relu", "--format", "json"], "exactly one of"),
        (["export", "3", "--builtin", "relu", "--format", "json"], "not both"),
        (["export", "--builtin", "swsh", "--format", "json"], "(did you mean 'swish'"),
        (["show", "--expr", "sigmod(x)"], "(did you mean 'sigmoid'"),
        (["ops", "--space", "conv"], "unknown space 'conv'"),
        (["export", "--builtin", "evonorm_b0", "--format", "sympy"], "activation graphs only"),
        (
            ["export", "--builtin", "relu", "--space", "normact", "--format", "json"],
            "is an activation layer, not normact",
        ),
        (
            ["export", "--builtin", "relu", "--format", "pytorch", "--name", "1x"],
            "not a valid Python identifier",
        ),
    ],
)
def test_errors_exit_2_with_one_line(app, args, fragment):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert fragment in res.output, res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_export_builtin_to_file(app, tmp_path):
    out = tmp_path / "b0.py"
    res = runner.invoke(
        app,
        [
            "export",
            "--builtin",
            "evonorm_b0",
            "--space",
            "normact",
            "--format",
            "pytorch",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    src = out.read_text()
    assert "class EvoNorm2dB0(nn.Module)" in src and "running_var" in src
    compile(src, str(out), "exec")


def test_export_expr_to_stdout(app):
    res = runner.invoke(
        app,
        [
            "export",
            "--expr",
            "x * sigmoid(beta * x)",
            "--space",
            "activation",
            "--format",
            "pytorch",
            "--name",
            "Swish",
        ],
    )
    assert res.exit_code == 0
    assert "class Swish(nn.Module)" in res.output
    res = runner.invoke(app, ["export", "--builtin", "mish", "--format", "json"])
    assert res.exit_code == 0 and '"space": "activation"' in res.output
    assert BUILTINS["mish"].key in {parse("x * tanh(softplus(x))", "activation").key}

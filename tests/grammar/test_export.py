"""export(): PyTorch file in a fresh interpreter == compile(), NumPy == compile(), JAX (when
installed), SymPy, LaTeX, JSON, timm state_dict compatibility, errors."""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy
import torch

from layerforge.grammar import (
    BUILTINS,
    FORMATS,
    GrammarError,
    Graph,
    compile_graph,
    export,
    export_warning,
    fingerprint,
    make_space,
    parse,
    random_graph,
    to_sympy,
    with_provenance,
)
from layerforge.grammar.export import provenance_lines

from .timm_reference import RefEvoNorm2dB0, RefEvoNorm2dS0

C = 16
SWISH_FOUND = [
    "x * sigmoid(beta * x)",
    "max(x, sigmoid(x))",
    "cos(x) - x",
    "min(x, sin(x))",
    "atan(x)^2 - x",
    "max(x, tanh(x))",
]


def _cases() -> list[tuple[str, Graph]]:
    cases = [(n, g) for n, g in sorted(BUILTINS.items())]
    cases += [(f"found{i}", parse(t, "activation")) for i, t in enumerate(SWISH_FOUND)]
    rng = random.Random(11)
    for kind, preset in (("activation", "full"), ("normact", "full")):
        space = make_space(kind, preset)
        cases += [(f"rand_{kind}{i}", random_graph(space, rng)) for i in range(6)]
    return cases


def _input(g: Graph, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (64,) if g.space == "activation" else (4, C, 3, 3)
    return torch.randn(*shape, generator=gen) * 2


def _randomize(mod, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))


RUNNER = textwrap.dedent(
    """
    import importlib.util, json, sys
    import torch
    torch.set_num_threads(1)
    work = sys.argv[1]
    spec = json.load(open(work + "/cases.json"))
    for case in spec:
        s = importlib.util.spec_from_file_location(case["module"], work + "/" + case["module"] + ".py")
        m = importlib.util.module_from_spec(s)
        s.loader.exec_module(m)
        cls = getattr(m, case["cls"])
        layer = cls(case["c"]) if case["c"] else cls()
        data = torch.load(work + "/" + case["module"] + ".pt")
        layer.load_state_dict(data["state"], strict=True)
        layer.train()
        y_train = layer(data["x"])
        layer.eval()
        y_eval = layer(data["x2"])
        torch.save({"train": y_train.detach(), "eval": y_eval.detach(),
                    "state": layer.state_dict()}, work + "/" + case["module"] + ".out.pt")
    bad = [m for m in ("grammar", "workers", "search", "storage", "api", "sympy") if m in sys.modules]
    print(json.dumps({"leaked": bad}))
    """
)


def _imports(src: str) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mods.add((node.module or "").split(".")[0])
    return mods


def test_pytorch_export_in_fresh_interpreter_equals_compile(tmp_path):
    spec, expected = [], {}
    cases = _cases()
    for i, (name, g) in enumerate(cases):
        cls = f"Layer{i}"
        src = export(g, "pytorch", cls)
        assert _imports(src) <= {"math", "torch"}, name
        module = f"case{i}"
        (tmp_path / f"{module}.py").write_text(src)
        c = C if g.space == "normact" else 0
        mod = compile_graph(g, c or None)
        _randomize(mod, i)
        x, x2 = _input(g, i), _input(g, 1000 + i)
        torch.save({"state": mod.state_dict(), "x": x, "x2": x2}, tmp_path / f"{module}.pt")
        mod.train()
        y_train = mod(x).detach()
        mod.eval()
        expected[module] = (name, y_train, mod(x2).detach(), mod.state_dict())
        spec.append({"module": module, "cls": cls, "c": c})
    # timm-layout state_dicts from the hand-written references load into the exported classes
    for ref_cls, bname in ((RefEvoNorm2dB0, "evonorm_b0"), (RefEvoNorm2dS0, "evonorm_s0")):
        module = f"timm_{bname}"
        (tmp_path / f"{module}.py").write_text(export(BUILTINS[bname], "pytorch", "EvoNorm"))
        ref = ref_cls(C)
        ref.groups = min(ref.groups, C) if hasattr(ref, "groups") else None
        _randomize(ref, 7)
        ref.train()
        ref(torch.randn(4, C, 3, 3))  # move running_var away from init
        x, x2 = torch.randn(4, C, 3, 3) * 2, torch.randn(4, C, 3, 3)
        torch.save({"state": ref.state_dict(), "x": x, "x2": x2}, tmp_path / f"{module}.pt")
        y_train = ref(x).detach()
        ref.eval()
        expected[module] = (bname, y_train, ref(x2).detach(), ref.state_dict())
        spec.append({"module": module, "cls": "EvoNorm", "c": C})
    (tmp_path / "cases.json").write_text(json.dumps(spec))
    (tmp_path / "runner.py").write_text(RUNNER)
    proc = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "runner.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"leaked": []}
    for module, (name, y_train, y_eval, state) in expected.items():
        out = torch.load(tmp_path / f"{module}.out.pt")
        torch.testing.assert_close(
            out["train"], y_train, rtol=1e-5, atol=1e-5, equal_nan=True, msg=name
        )
        torch.testing.assert_close(
            out["eval"], y_eval, rtol=1e-5, atol=1e-5, equal_nan=True, msg=name
        )
        for k, v in state.items():
            torch.testing.assert_close(out["state"][k], v, rtol=1e-6, atol=1e-6, msg=f"{name}.{k}")


def _load_source(src: str, name: str):
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(src, f"<{name}>", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    return mod


@pytest.mark.parametrize("name,g", _cases(), ids=[n for n, _ in _cases()])
def test_numpy_export_equals_compile(name, g):
    src = export(g, "numpy", "layer")
    assert _imports(src) <= {"math", "numpy"}
    fn = _load_source(src, "np_" + name).layer
    mod = compile_graph(g, C if g.space == "normact" else None).double()
    _randomize(mod, 3)
    x = _input(g, 5).double()
    with np.errstate(all="ignore"):
        if g.space == "activation":
            kw = {k: v.item() for k, v in mod.named_parameters()}
            y = fn(x.numpy(), **kw)
            np.testing.assert_allclose(y, mod(x).detach().numpy(), rtol=1e-9, atol=1e-9)
        else:
            params = {k: v.detach().numpy() for k, v in mod.named_parameters()}
            y = fn(x.numpy(), params)
            np.testing.assert_allclose(y, mod(x).detach().numpy(), rtol=1e-9, atol=1e-9)
            mod.eval()
            running = {k: v.numpy() for k, v in mod.named_buffers()}
            y = fn(x.numpy(), params, running)
            np.testing.assert_allclose(y, mod(x).detach().numpy(), rtol=1e-9, atol=1e-9)
            # (N, C) input works too
            x2 = x[:, :, 0, 0].numpy()
            assert fn(x2, params).shape == x2.shape


def test_jax_export_is_valid_python_for_every_case():
    for name, g in _cases():
        src = export(g, "jax", "layer")
        tree = ast.parse(src)
        assert _imports(src) <= {"jax"}, name
        assert any(isinstance(n, ast.FunctionDef) and n.name == "layer" for n in tree.body), name


def test_jax_export_runs_and_equals_numpy():
    jax = pytest.importorskip(
        "jax",
        reason="jax is not installed here (the dev extra installs it): the JAX export is "
        "only syntax-checked (test_jax_export_is_valid_python_for_every_case)",
    )
    jax.config.update("jax_enable_x64", True)
    for name, g in _cases():
        fn = _load_source(export(g, "jax", "layer"), "jx_" + name).layer
        ref = _load_source(export(g, "numpy", "layer"), "np2_" + name).layer
        x = _input(g, 5).double().numpy()
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(
                np.asarray(fn(x)), ref(x), rtol=1e-6, atol=1e-6, err_msg=name
            )


@pytest.mark.parametrize(
    "text", SWISH_FOUND + ["x * sigmoid(x)", "log(x) + sqrt(x) - x / (1 + abs(x))"]
)
def test_sympy_export(text):
    g = parse(text, "activation")
    src = export(g, "sympy", "expr")
    ns: dict = {}
    exec(compile(src, "<sympy-export>", "exec"), ns)  # noqa: S102 - our own generated code
    expr = ns["expr"]
    assert expr == to_sympy(g)
    x = sympy.Symbol("x", real=True)
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    f = sympy.lambdify(syms, expr, "numpy")
    pts = np.array([-2.3, -0.7, 0.4, 1.9])
    vals = {s.name: (pts if s == x else 1.0) for s in syms}
    mod = compile_graph(g).double()
    np.testing.assert_allclose(
        f(*[vals[s.name] for s in syms]),
        mod(torch.tensor(pts)).detach().numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


def test_sympy_export_normact_is_a_clear_error():
    with pytest.raises(GrammarError, match="activation graphs only.*latex"):
        export(BUILTINS["evonorm_b0"], "sympy")


def test_latex_export():
    assert (
        export(parse("x * sigmoid(x)", "activation"), "latex")
        == sympy.latex(to_sympy(parse("x*sigmoid(x)", "activation"))) + "\n"
    )
    assert "\\tanh" in export(BUILTINS["mish"], "latex")
    b0 = export(BUILTINS["evonorm_b0"], "latex")
    assert (
        "\\gamma" in b0
        and "\\beta" in b0
        and "\\max" in b0
        and "\\mathrm{batch}" in b0
        and "v_{1}" in b0
    )
    for name, g in BUILTINS.items():
        s = export(g, "latex")
        assert s.count("{") == s.count("}") and s.count("\\left") == s.count("\\right"), name


def test_json_export_round_trips():
    for g in BUILTINS.values():
        g2 = Graph.from_dict(json.loads(export(g, "json")))
        assert g2.key == g.key and fingerprint(g2) == fingerprint(g)


def test_every_export_ends_with_a_newline():
    for name, g in _cases():
        for fmt in FORMATS:
            if fmt == "sympy" and g.space == "normact":
                continue
            assert export(g, fmt).endswith("\n"), (name, fmt)


PROVENANCE = {
    "layerforge": "9.9.9",
    "format": "pytorch",
    "campaign": {"id": 3, "name": "swish-hunt"},
    "candidate": {"id": 17, "text": "x * sigmoid(x)", "origin": "mutation", "status": "completed"},
    "objectives": {"accuracy:mlp/mnist1d": 0.8125, "nodes": 3.0},
    "gain": 0.5961,
    "warning": None,
}


@pytest.mark.parametrize("fmt", ["pytorch", "numpy", "jax", "sympy", "latex"])
def test_provenance_header_in_every_text_format(fmt):
    g = parse("x * sigmoid(x)", "activation")
    text = with_provenance(export(g, fmt), fmt, {**PROVENANCE, "format": fmt})
    marker = "% " if fmt == "latex" else "# "
    header = [line for line in text.splitlines() if line.startswith(marker)]
    assert header[0] == f"{marker}Exported by layerforge 9.9.9 as {fmt}"
    joined = "\n".join(header)
    for part in (
        "candidate 17 of campaign 3 (swish-hunt)",
        "layer: x * sigmoid(x)",
        "status: completed (origin: mutation)",
        "accuracy:mlp/mnist1d = 0.8125, nodes = 3",
        "gamma_f = 0.5961",
    ):
        assert part in joined, part
    assert "WARNING" not in text and text.endswith("\n") and not text.endswith("\n\n")
    if fmt != "latex":  # the header is comments: the file is still the same Python
        assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(export(g, fmt)))


def test_provenance_warning_for_a_rejected_candidate(tmp_path):
    warning = export_warning("rejected", "at stage 'quality': accuracy 0.11 < 0.2", 17)
    assert warning.startswith("candidate 17 was rejected") and "0.11 < 0.2" in warning
    assert export_warning("completed") is None
    g = parse("x * sigmoid(x)", "activation")
    text = with_provenance(export(g, "pytorch"), "pytorch", {**PROVENANCE, "warning": warning})
    assert f"# WARNING: {warning}" in text.splitlines()
    # the file still runs: the header is comments only
    (tmp_path / "layer.py").write_text(text)
    module = _load_source(text, "prov_layer")
    assert float(module.GeneratedActivation()(torch.tensor([1.0]))) == pytest.approx(0.7311, 1e-3)


def test_json_export_with_provenance_still_loads_as_a_graph():
    g = BUILTINS["evonorm_s0"]
    text = with_provenance(export(g, "json"), "json", {**PROVENANCE, "format": "json"})
    data = json.loads(text)
    assert data["provenance"]["candidate"]["id"] == 17 and text.endswith("\n")
    assert Graph.from_dict(data).key == g.key


def test_provenance_without_gain_says_so():
    lines = provenance_lines({"layerforge": "1", "gain": None})
    assert any("none recorded" in line for line in lines)


def test_export_errors():
    g = BUILTINS["relu"]
    with pytest.raises(GrammarError) as info:
        export(g, "onnx")
    assert all(f in str(info.value) for f in FORMATS)
    for bad in ["1abc", "class", "a-b", "x; import os", ""]:
        with pytest.raises(GrammarError, match="not a valid Python identifier"):
            export(g, "pytorch", bad)
    with pytest.raises(GrammarError, match="expected a Graph"):
        export("relu", "json")  # type: ignore[arg-type] - the wrong type on purpose


def test_op_missing_in_target_says_how_to_fix(monkeypatch):
    import dataclasses

    import layerforge.grammar.ops as ops

    monkeypatch.setitem(ops.OPS, "sinc", dataclasses.replace(ops.OPS["sinc"], jax_src=None))
    with pytest.raises(
        GrammarError, match="op 'sinc' has no jax translation; rewrite the expression without"
    ):
        export(parse("sinc(x)", "activation"), "jax")


def test_exported_normact_constructor_matches_timm_shape():
    src = export(BUILTINS["evonorm_b0"], "pytorch", "EvoNorm2dB0")
    mod = _load_source(src, "b0src")
    layer = mod.EvoNorm2dB0(32, apply_act=True, eps=1e-3, drop_path=0.1)  # extra kwargs ignored
    assert layer.eps == 1e-3 and layer.momentum == 0.1
    assert sorted(layer.state_dict()) == ["bias", "running_var", "v", "weight"]
    s0 = _load_source(
        export(BUILTINS["evonorm_s0"], "pytorch", "EvoNorm2dS0"), "s0src"
    ).EvoNorm2dS0(64, group_size=8)
    assert s0.groups == 8 and s0.eps == 1e-5 and sorted(s0.state_dict()) == ["bias", "v", "weight"]

"""Specs as users write them: dicts, JSON and YAML files, the model; the JSON Schema.

A spec file's syntax error names the file, line and column; YAML is read as plain data only
(a Python tag is an error, never an object); a key given twice is an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from layerforge.errors import SpecError, SpecFileError
from layerforge.search.spec import validate_spec
from layerforge.specs import load_spec, spec_schema, validate

ROOT = Path(__file__).resolve().parents[2]

SPEC = {
    "name": "yaml-or-json",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4},
    "seeds": ["x * sigmoid(x)", "relu"],
    "strategy": {"name": "evolution", "population": 8, "tournament": 2},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 30}],
    "budget": {"max_candidates": 12, "max_seconds": 600.0},
    "parallelism": 2,
}

YAML = """\
# a campaign, as a researcher writes it
name: yaml-or-json
space: {kind: activation, ops: swish, max_nodes: 4}
seeds:
  - x * sigmoid(x)
  - relu
strategy:
  name: evolution
  population: 8
  tournament: 2
proxies:
  - {arch: mlp, dataset: mnist1d, steps: 30}
budget: {max_candidates: 12, max_seconds: 600.0}
parallelism: 2
"""


def test_yaml_json_dict_and_model_give_the_same_spec(tmp_path):
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text(YAML)
    json_file = tmp_path / "spec.json"
    json_file.write_text(json.dumps(SPEC))
    assert load_spec(yaml_file) == load_spec(str(json_file)) == load_spec(SPEC) == SPEC
    model = validate(yaml_file)
    assert load_spec(model) == validate_spec(SPEC).model_dump(mode="json")
    yml = tmp_path / "spec.yml"
    yml.write_text(YAML)
    assert validate(yml) == model


@pytest.mark.parametrize(
    "name,text,line,column,fragment",
    [
        ("bad.yaml", "name: x\nspace: {kind: activation\nproxies: []\n", 3, 8, "not valid YAML"),
        ("tabs.yaml", "name: x\n\tspace: 1\n", 2, 1, "not valid YAML"),
        ("bad.json", '{"name": "x",\n "space": }', 2, 11, "not valid JSON"),
        ("twice.yaml", "name: a\nspace: {kind: activation}\nname: b\n", 3, 1, "'name'"),
        ("nested-twice.yaml", "budget:\n  max_seconds: 1\n  max_seconds: 2\n", 3, 3, "twice"),
    ],
)
def test_a_syntax_error_names_file_line_and_column(tmp_path, name, text, line, column, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecFileError) as info:
        load_spec(path)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert str(path) in str(err) and fragment in str(err)
    assert f"line {line}, column {column}" in str(err)
    assert isinstance(err, SpecError) and isinstance(err, ValueError)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("- a\n- b\n", "holds a list"),
        ("", "holds nothing"),
        ("just text\n", "holds a str"),
        ("name: !!python/object/apply:os.system ['id']\n", "not valid YAML"),
        ("--- {a: 1}\n--- {b: 2}\n", "not valid YAML"),
    ],
)
def test_files_that_are_not_a_mapping_of_plain_data(tmp_path, text, fragment):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecFileError, match=re.escape(fragment)):
        load_spec(path)


def test_missing_folder_binary_and_wrong_type(tmp_path):
    with pytest.raises(SpecFileError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecFileError, match="is a folder"):
        load_spec(tmp_path)
    binary = tmp_path / "spec.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(SpecFileError, match="not UTF-8"):
        load_spec(binary)
    with pytest.raises(TypeError, match="got int"):
        load_spec(3)


def test_validate_names_every_bad_field_relative_to_the_spec():
    bad = {**SPEC, "budjet": {}, "budget": {"max_candidates": 0}, "seeds": ["bn_relu"]}
    with pytest.raises(SpecError) as info:
        validate(bad)
    fields = dict(info.value.fields)
    assert fields["budjet"] == "unknown field (did you mean 'budget'?)"
    assert "greater than or equal to 1" in fields["budget.max_candidates"]
    assert info.value.code == "validation_error"


@pytest.mark.parametrize(
    "edit,path,fragment",
    [
        ({"budjet": {}}, "budjet", "did you mean 'budget'"),
        ({"strategy": {"name": "evolution", "populaton": 8}}, "strategy.populaton", "'population'"),
        ({"budget": {"max_candidate": 3}}, "budget.max_candidate", "'max_candidates'"),
        ({"zzz": 1}, "zzz", "the fields here are name, space, seeds"),
        ({"space": {"kind": "activation", "ops": ["add", "sigmod"]}}, "space", "'sigmoid'"),
        ({"seeds": ["swsh"]}, "spec", "unknown built-in 'swsh' (did you mean 'swish'"),
        ({"seeds": ["sigmod(x) * x"]}, "spec", "unknown function 'sigmod' at position 0 (did"),
        ({"seeds": ["x * bta"]}, "spec", "unknown name 'bta' at position 4 (did you mean 'beta'"),
        (
            {"seeds": ["evonorm_b0"]},
            "spec",
            "'evonorm_b0' is a built-in of the normact space, not of the activation space",
        ),
        (
            {"space": {"kind": "normact"}, "seeds": ["gelu"]},
            "spec",
            "'gelu' is a built-in of the activation space, not of the normact space",
        ),
    ],
)
def test_did_you_mean(edit, path, fragment):
    with pytest.raises(SpecError) as info:
        validate({**SPEC, **edit})
    fields = dict(info.value.fields)
    assert path in fields, info.value.fields
    assert fragment in fields[path], fields[path]


def test_the_schema_accepts_the_readme_spec_and_rejects_bad_ones(tmp_path):
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"## A campaign(.*?)\n## ", readme, re.S).group(1)
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    assert {e["space"]["kind"] for e in examples} == {"activation", "normact"}
    for example in examples:
        assert not list(validator.iter_errors(example)), example["name"]
        validate(example)  # the model agrees
    assert not list(validator.iter_errors(SPEC))
    for bad in (
        {**SPEC, "budjet": {}},
        {**SPEC, "parallelism": 0},
        {**SPEC, "space": {"kind": "quantum"}},
        {k: v for k, v in SPEC.items() if k != "proxies"},
    ):
        assert list(validator.iter_errors(bad)), bad
    assert schema["title"] and schema["additionalProperties"] is False

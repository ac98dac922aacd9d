"""Campaign specs as users write them: a dict, a JSON or YAML file, or the spec model.

:func:`load_spec` turns any of them into the plain dict the API accepts (nothing is
validated here: the server, or :func:`validate`, does that with field-naming errors).
YAML is read with ``yaml.safe_load`` only (plain data, never Python objects), and a key
given twice in one mapping is an error rather than silently the last one.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerforge.errors import SpecError, SpecFileError

if TYPE_CHECKING:
    from layerforge.search.spec import CampaignSpec

YAML_SUFFIXES = (".yaml", ".yml")


def load_spec(source: Any) -> dict[str, Any]:
    """The spec ``source`` as a JSON-ready dict.

    ``source`` is a dict (copied), a path (``str`` or ``Path``) to a ``.json``, ``.yaml`` or
    ``.yml`` file (any other suffix is read as YAML, which also reads JSON), or a
    :class:`layerforge.search.spec.CampaignSpec` (dumped with its defaults). Raises
    :class:`SpecFileError` naming the file, and for a syntax error its line and column.
    """
    if isinstance(source, dict):
        return dict(source)
    if isinstance(source, (str, PathLike)):
        return read_spec_file(Path(source))
    dump = getattr(source, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(
        f"a campaign spec is a dict, a path to a JSON or YAML file, or a CampaignSpec; "
        f"got {type(source).__name__}"
    )


def read_spec_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML spec file; :class:`SpecFileError` says what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(f"{path}: no such file", str(path)) from None
    except IsADirectoryError:
        raise SpecFileError(f"{path}: is a folder, not a spec file", str(path)) from None
    except UnicodeDecodeError as err:
        raise SpecFileError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason})", str(path)
        ) from None
    except OSError as err:
        raise SpecFileError(f"{path}: cannot read: {err.strerror or err}", str(path)) from None
    if path.suffix.lower() == ".json":
        data = _parse_json(text, path)
    else:
        data = _parse_yaml(text, path)
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise SpecFileError(
            f"{path}: a campaign spec is a mapping of fields (name, space, proxies, ...), "
            f"but the file holds {kind}",
            str(path),
        )
    return data


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecFileError(
            f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}",
            str(path),
            err.lineno,
            err.colno,
        ) from None


def _parse_yaml(text: str, path: Path) -> Any:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only, nothing constructed
        if root is not None:
            _reject_duplicate_keys(root, path)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(p for p in (err.context, err.problem) if p) or "syntax error"
        if mark is None:
            raise SpecFileError(f"{path}: not valid YAML: {problem}", str(path)) from None
        raise SpecFileError(
            f"{path}: not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}",
            str(path),
            mark.line + 1,
            mark.column + 1,
        ) from None
    except yaml.YAMLError as err:
        raise SpecFileError(f"{path}: not valid YAML: {err}", str(path)) from None


def _reject_duplicate_keys(node: Any, path: Path) -> None:
    """YAML (like JSON) keeps the last of two equal keys; in a spec that hides an edit."""
    import yaml

    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, Any] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        mark = key.start_mark
                        raise SpecFileError(
                            f"{path}: key {key.value!r} at line {mark.line + 1}, column "
                            f"{mark.column + 1} is given twice (first at line "
                            f"{seen[key.value].line + 1})",
                            str(path),
                            mark.line + 1,
                            mark.column + 1,
                        )
                    seen[key.value] = key.start_mark
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def validate(source: Any) -> CampaignSpec:
    """Load and validate a spec here, as the API does; :class:`SpecError` names each bad
    field (paths relative to the spec, e.g. ``budget.max_candidates``)."""
    from layerforge.search.spec import SpecError as _SearchSpecError
    from layerforge.search.spec import validate_spec

    data = load_spec(source)
    try:
        return validate_spec(data)
    except _SearchSpecError as err:
        raise SpecError(f"invalid campaign spec: {err}", list(err.errors)) from None


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a campaign spec (for editors, YAML language servers and Hydra)."""
    from layerforge.search.spec import CampaignSpec

    schema = CampaignSpec.model_json_schema()
    schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
    schema.setdefault("title", "layerforge campaign spec")
    return schema

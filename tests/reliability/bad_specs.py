"""A corpus of malformed campaign specs, each with the text its 4xx message must contain.

A case is ``(case_id, body, fragment)``: ``body`` is either a dict of dotted-path edits
applied to a valid spec (``{"space.max_nodes": 0}``; the value ``DELETE`` removes the key),
or ``Raw(bytes, content_type)`` sent as is. ``fragment`` must appear in the error message
(it names the field, or says what is wrong with the body).

Kept apart from the tests so that new cases are one line each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DELETE = object()


@dataclass(frozen=True)
class Raw:
    content: bytes
    content_type: str = "application/json"


def valid_spec() -> dict:
    return {
        "name": "corpus",
        "space": {"kind": "activation", "ops": "swish", "max_nodes": 4},
        "seeds": ["x * sigmoid(x)"],
        "strategy": {"name": "evolution", "population": 8, "tournament": 2},
        "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 30}],
        "rejection": {"quality_steps": 10},
        "budget": {"max_candidates": 12},
        "transfer": {"top_k": 0},
        "parallelism": 2,
    }


def apply(edits: dict) -> dict:
    spec = valid_spec()
    for path, value in edits.items():
        node = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


def raw_spec_with(text_fragment: str, marker: str = '"parallelism": 2') -> Raw:
    """The valid spec as JSON text with ``marker`` replaced (for what json.dumps can't say)."""
    text = json.dumps(valid_spec())
    assert marker in text
    return Raw(text.replace(marker, text_fragment).encode())


DEEP = 100_000
CASES: list[tuple[str, object, str]] = [
    # ---- wrong types, every level
    ("name-int", {"name": 123}, "body.name"),
    ("name-empty", {"name": ""}, "body.name"),
    ("name-too-long", {"name": "n" * 201}, "body.name"),
    ("space-string", {"space": "activation"}, "body.space"),
    ("space-kind-int", {"space.kind": 1}, "body.space.kind"),
    ("space-max-nodes-word", {"space.max_nodes": "four"}, "body.space.max_nodes"),
    ("space-ops-int", {"space.ops": 5}, "body.space.ops"),
    ("seeds-string", {"seeds": "relu"}, "body.seeds"),
    ("seeds-int-item", {"seeds": [1]}, "body.seeds.0"),
    ("strategy-string", {"strategy": "evolution"}, "body.strategy"),
    ("proxies-object", {"proxies": {"arch": "mlp"}}, "body.proxies"),
    ("proxies-int-item", {"proxies": [1]}, "proxies"),
    ("objectives-string", {"objectives": "accuracy"}, "body.objectives"),
    ("rejection-list", {"rejection": [1]}, "body.rejection"),
    ("budget-string", {"budget": "lots"}, "body.budget"),
    ("parallelism-float", {"parallelism": 1.5}, "body.parallelism"),
    ("parallelism-list", {"parallelism": [2]}, "body.parallelism"),
    ("seed-string-injection", {"seed": "0; DROP TABLE campaign"}, "body.seed"),
    ("transfer-proxies-string", {"transfer.proxies": "mlp"}, "body.transfer.proxies"),
    # ---- unknown fields, every level
    ("unknown-top", {"colour": "red"}, "body.colour"),
    ("unknown-space", {"space.depth": 3}, "body.space.depth"),
    ("unknown-strategy-field", {"strategy.temperature": 1}, "body.strategy.temperature"),
    ("unknown-rejection", {"rejection.stage": "probe"}, "body.rejection.stage"),
    ("unknown-budget", {"budget.max_hours": 1}, "body.budget.max_hours"),
    ("unknown-transfer", {"transfer.k": 1}, "body.transfer.k"),
    ("unknown-proxy-field", {"proxies.0.colour": "red"}, "proxies[0]"),
    # ---- missing required
    ("missing-space", {"space": DELETE}, "body.space"),
    ("missing-proxies", {"proxies": DELETE}, "body.proxies"),
    ("missing-space-kind", {"space.kind": DELETE}, "body.space.kind"),
    # ---- zero, negative, huge
    ("budget-zero", {"budget.max_candidates": 0}, "body.budget.max_candidates"),
    ("budget-negative", {"budget.max_candidates": -1}, "body.budget.max_candidates"),
    ("budget-huge", {"budget.max_candidates": 10**30}, "body.budget.max_candidates"),
    ("budget-seconds-zero", {"budget.max_seconds": 0}, "body.budget.max_seconds"),
    ("budget-seconds-negative", {"budget.max_seconds": -3600}, "body.budget.max_seconds"),
    ("max-nodes-zero", {"space.max_nodes": 0}, "body.space.max_nodes"),
    ("max-depth-huge", {"space.max_depth": 10**6}, "body.space.max_depth"),
    ("population-one", {"strategy.population": 1}, "body.strategy.population"),
    ("tournament-over-population", {"strategy.tournament": 100}, "tournament"),
    ("parallelism-zero", {"parallelism": 0}, "body.parallelism"),
    ("parallelism-huge", {"parallelism": 10**9}, "body.parallelism"),
    ("seed-negative", {"seed": -1}, "body.seed"),
    ("seed-2-31", {"seed": 2**31}, "body.seed"),
    ("quality-steps-zero", {"rejection.quality_steps": 0}, "body.rejection.quality_steps"),
    (
        "quality-min-over-one",
        {"rejection.quality_min_accuracy": 1.5},
        "body.rejection.quality_min_accuracy",
    ),
    (
        "grad-norm-negative",
        {"rejection.stability_max_grad_norm": -1},
        "body.rejection.stability_max_grad_norm",
    ),
    (
        "slope-ranges-reversed",
        {"rejection.stability_slope_near": 64.0, "rejection.stability_slope_far": 4.0},
        "stability_slope_far (4) must exceed stability_slope_near (64)",
    ),
    (
        "slope-growth-under-one",
        {"rejection.stability_max_slope_growth": 0.5},
        "body.rejection.stability_max_slope_growth",
    ),
    ("depth-layers-zero", {"rejection.depth_layers": 0}, "body.rejection.depth_layers"),
    ("depth-steps-bool", {"rejection.depth_steps": True}, "body.rejection.depth_steps"),
    ("transfer-top-k-negative", {"transfer.top_k": -1}, "body.transfer.top_k"),
    ("transfer-seeds-zero", {"transfer.seeds": 0}, "body.transfer.seeds"),
    ("proxy-steps-negative", {"proxies.0.steps": -5}, "proxies[0]"),
    ("proxy-steps-huge", {"proxies.0.steps": 10**20}, "proxies[0]"),
    ("too-many-proxies", {"proxies": [{"arch": "mlp", "dataset": "digits"}] * 33}, "body.proxies"),
    ("too-many-seeds", {"seeds": ["relu"] * 1001}, "body.seeds"),
    # ---- over what a campaign can run (tests/api/test_spec_limits.py has each limit)
    ("population-over-limit", {"strategy.population": 100_000}, "less than or equal to 10000"),
    ("parallelism-over-limit", {"parallelism": 20_000}, "less than or equal to 16384"),
    ("max-seconds-a-year", {"budget.max_seconds": 365 * 86400}, "body.budget.max_seconds"),
    ("proxy-steps-1e9", {"proxies.0.steps": 10**9}, "proxies[0].steps: must be <= 1,000,000"),
    ("proxy-batch-1e7", {"proxies.0.batch_size": 10**7}, "proxies[0].batch_size: must be <="),
    ("proxy-width-huge", {"proxies.0.scale": 1e6}, "proxies[0].scale"),
    (
        "too-many-transfer-proxies",
        {"transfer.proxies": [{"arch": "mlp", "dataset": "digits"}] * 33},
        "body.transfer.proxies",
    ),
    ("transfer-seeds-huge", {"transfer.seeds": 1000}, "body.transfer.seeds"),
    ("probe-huge", {"rejection.probe_size": 10**6}, "body.rejection.probe_size"),
    (
        "dataset-option-unknown",
        {"proxies.0.dataset_options": {"num_samples": 5}},
        "proxies[0].dataset_options.num_samples: unknown option for dataset 'digits'",
    ),
    (
        "synthetic-1e9-samples",
        {
            "proxies.0": {
                "arch": "mlp",
                "dataset": "synthetic",
                "dataset_options": {"num_train": 10**9},
            }
        },
        "proxies[0].dataset_options.num_train",
    ),
    (
        "synthetic-image-1e5",
        {"proxies.0": {"arch": "mlp", "dataset": "synthetic", "dataset_options": {"size": 10**5}}},
        "proxies[0].dataset_options.size",
    ),
    (
        "budget-1e400",
        raw_spec_with('"budget": {"max_candidates": 1e400}', '"budget": {"max_candidates": 12}'),
        "max_candidates",
    ),
    (
        "budget-seconds-nan",
        raw_spec_with('"budget": {"max_seconds": NaN}', '"budget": {"max_candidates": 12}'),
        "max_seconds",
    ),
    (
        "grad-norm-infinity",
        raw_spec_with(
            '"rejection": {"quality_steps": 10, "stability_max_grad_norm": Infinity}',
            '"rejection": {"quality_steps": 10}',
        ),
        "stability_max_grad_norm",
    ),
    (
        "budget-seconds-infinity",
        raw_spec_with('"budget": {"max_seconds": Infinity}', '"budget": {"max_candidates": 12}'),
        "max_seconds",
    ),
    # ---- empty and unknown names
    ("proxies-empty", {"proxies": []}, "body.proxies"),
    ("objectives-empty", {"objectives": []}, "body.objectives"),
    ("unknown-kind", {"space.kind": "quantum"}, "body.space.kind"),
    ("unknown-op-preset", {"space.ops": "nonexistent_preset"}, "nonexistent_preset"),
    ("unknown-op-in-list", {"space.ops": ["add", "teleport"]}, "teleport"),
    ("unknown-arch", {"proxies.0.arch": "vgg19"}, "vgg19"),
    ("unknown-dataset", {"proxies.0.dataset": "imagenet"}, "imagenet"),
    ("unknown-strategy", {"strategy.name": "annealing"}, "body.strategy.name"),
    ("unknown-sampler", {"strategy.sampler": "cmaes"}, "body.strategy.sampler"),
    ("unknown-objective", {"objectives": ["accuracy", "beauty"]}, "body.objectives"),
    ("objectives-no-accuracy", {"objectives": ["runtime"]}, "accuracy"),
    ("objectives-twice", {"objectives": ["accuracy", "accuracy"]}, "twice"),
    ("unknown-stage", {"rejection.stages": ["probe", "vibe"]}, "body.rejection.stages"),
    (
        "unknown-transfer-arch",
        {"transfer.proxies": [{"arch": "nope", "dataset": "digits"}]},
        "body.transfer.proxies",
    ),
    # ---- seeds that don't parse or try to inject code
    ("seed-syntax", {"seeds": ["x +"]}, "seeds[0]"),
    ("seed-unknown-variable", {"seeds": ["y * 2"]}, "seeds[0]"),
    ("seed-import", {"seeds": ["relu", "__import__('os').system('id')"]}, "seeds[1]"),
    ("seed-eval", {"seeds": ["eval('x')"]}, "seeds[0]"),
    ("seed-exec", {"seeds": ["exec('import os')"]}, "seeds[0]"),
    ("seed-dunder", {"seeds": ["x.__class__.__bases__"]}, "seeds[0]"),
    ("seed-lambda", {"seeds": ["lambda x: x"]}, "seeds[0]"),
    ("seed-open", {"seeds": ["open('/etc/passwd')"]}, "seeds[0]"),
    ("seed-statement", {"seeds": ["x; import os"]}, "seeds[0]"),
    ("seed-sympy-injection", {"seeds": ["Symbol('x').__class__"]}, "seeds[0]"),
    ("seed-normact-op-in-activation", {"seeds": ["x / std_batch(x)"]}, "seeds[0]"),
    ("seed-deep-parens", {"seeds": ["(" * 2000 + "x" + ")" * 2000]}, "seeds[0]"),
    ("seed-constant", {"seeds": ["1 + 2"]}, "seeds[0]"),
    ("seed-empty", {"seeds": [""]}, "seeds[0]"),
    ("seed-nul", {"seeds": ["x\x00"]}, "seeds[0]"),
    ("seed-unicode-times", {"seeds": ["x × sigmoid(x)"]}, "seeds[0]"),
    # ---- unicode elsewhere
    ("kind-unicode", {"space.kind": "activatiön"}, "body.space.kind"),
    ("strategy-fullwidth", {"strategy.name": "ｅｖｏｌｕｔｉｏｎ"}, "body.strategy.name"),
    ("lone-surrogate", raw_spec_with('"name": "\\ud800"', '"name": "corpus"'), "name"),
    # ---- not a spec at all
    ("body-empty-object", Raw(b"{}"), "body.space"),
    ("body-true", Raw(b"true"), "body"),
    ("body-array", Raw(b"[{}]"), "body"),
    ("body-empty", Raw(b""), "body"),
    ("body-deeply-nested", Raw(b"[" * DEEP + b"]" * DEEP), "body"),
    (
        "body-deeply-nested-object",
        Raw(b'{"name": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_001),
        "body",
    ),
    ("body-not-json", Raw(b"name=x&space=activation"), "JSON"),
    ("content-type-text", Raw(json.dumps(valid_spec()).encode(), "text/plain"), "body"),
    ("content-type-form", Raw(b"name=x", "application/x-www-form-urlencoded"), "body"),
    ("content-type-xml", Raw(b"<spec/>", "application/xml"), "body"),
    # (a UTF-16 or UTF-32 body is accepted: json.loads detects the encoding, RFC 8259 §8.1)
]

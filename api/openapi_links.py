"""OpenAPI links: which response gives the id another operation takes.

A client generator, Swagger UI and schemathesis's stateful phase all read them: the campaign a
``POST /campaigns`` created (or the first of a page of ``GET /campaigns``) is the
``campaign_id`` of every ``/campaigns/{campaign_id}...`` operation, and the first candidate of
a candidates page is the ``candidate_id`` of every ``/candidates/{candidate_id}...`` one. The
links are derived from the paths, so a new route under those prefixes is linked without an
edit here.
"""

from __future__ import annotations

from typing import Any

#: (producer path, method, status, where the id is in its body, the parameter it fills)
PRODUCERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("/api/v1/campaigns", "post", "202", "$response.body#/id", "campaign_id"),
    ("/api/v1/campaigns", "get", "200", "$response.body#/items/0/id", "campaign_id"),
    (
        "/api/v1/campaigns/{campaign_id}/candidates",
        "get",
        "200",
        "$response.body#/items/0/id",
        "candidate_id",
    ),
)


def _link_name(method: str, path: str, parameter: str) -> str:
    """``GetCampaign``-style name from the consumer's method and the path after the id."""
    tail = path.split("{" + parameter + "}", 1)[1].strip("/").replace("/", " ")
    base = parameter.removesuffix("_id")
    words = [method.lower()] + [base] + (tail.split() if tail else [])
    return "".join(w.capitalize() for w in words)


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the links of :data:`PRODUCERS` to ``schema`` (in place) and return it."""
    paths = schema.get("paths", {})
    for producer_path, producer_method, status, expression, parameter in PRODUCERS:
        producer = paths.get(producer_path, {}).get(producer_method)
        if producer is None:
            continue
        links = producer.setdefault("responses", {}).setdefault(status, {}).setdefault("links", {})
        for path, operations in paths.items():
            if "{" + parameter + "}" not in path:
                continue
            for method, operation in operations.items():
                operation_id = operation.get("operationId")
                if operation_id is None or operation is producer:
                    continue
                links[_link_name(method, path, parameter)] = {
                    "operationId": operation_id,
                    "parameters": {parameter: expression},
                    "description": f"{method.upper()} {path} with the {parameter} of this answer",
                }
    return schema

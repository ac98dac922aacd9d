"""``layerforge.Client``: every operation of the layerforge HTTP API as a Python method.

::

    from layerforge import Client

    client = Client("http://127.0.0.1:8000", token=None)
    campaign = client.create_campaign("spec.yaml")
    final = client.wait(campaign["id"])
    print(client.get_pareto(campaign["id"])["front"])

Answers are the API's JSON documents as dicts (their shapes are the schemas of
``/openapi.json``: ``CampaignDetail``, ``CandidatePage``, ...). A failure raises a typed
exception from :mod:`layerforge.errors` carrying the API's status, code and message; a dead
server raises :class:`~layerforge.errors.ServerUnreachable` naming the URL. Nothing here
exits the interpreter. Only httpx (and PyYAML for YAML specs) is imported; Optuna only by
:meth:`Client.export_optuna`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from layerforge.errors import (
    ApiError,
    ExportWarning,
    RemoteSpecError,
    ServerUnreachable,
    error_class,
)
from layerforge.specs import load_spec

API = "/api/v1"
DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_VARIABLE = "LAYERFORGE_SERVER"
TOKEN_VARIABLE = "LAYERFORGE_API_TOKEN"
FINISHED = ("completed", "cancelled", "failed")

#: Every operation of the API (method, path as in ``/openapi.json``) and the method of
#: :class:`Client` that calls it; a test checks this against a live server's document.
OPERATIONS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "health",
    ("GET", "/metrics"): "metrics",
    ("GET", f"{API}/ops"): "list_ops",
    ("GET", f"{API}/builtins"): "list_builtins",
    ("POST", f"{API}/campaigns"): "create_campaign",
    ("GET", f"{API}/campaigns"): "list_campaigns",
    ("GET", f"{API}/campaigns/{{campaign_id}}"): "get_campaign",
    ("POST", f"{API}/campaigns/{{campaign_id}}/pause"): "pause_campaign",
    ("POST", f"{API}/campaigns/{{campaign_id}}/resume"): "resume_campaign",
    ("POST", f"{API}/campaigns/{{campaign_id}}/cancel"): "cancel_campaign",
    ("DELETE", f"{API}/campaigns/{{campaign_id}}"): "delete_campaign",
    ("GET", f"{API}/campaigns/{{campaign_id}}/pareto"): "get_pareto",
    ("GET", f"{API}/campaigns/{{campaign_id}}/transfer"): "get_transfer",
    ("GET", f"{API}/campaigns/{{campaign_id}}/hypervolume"): "get_hypervolume",
    ("GET", f"{API}/campaigns/{{campaign_id}}/pareto/download"): "download_pareto",
    ("GET", f"{API}/campaigns/{{campaign_id}}/hypervolume/download"): "download_hypervolume",
    ("GET", f"{API}/campaigns/{{campaign_id}}/optuna"): "get_optuna_study",
    ("GET", f"{API}/campaigns/{{campaign_id}}/events"): "events",
    ("GET", f"{API}/campaigns/{{campaign_id}}/candidates"): "list_candidates",
    ("GET", f"{API}/candidates/{{candidate_id}}"): "get_candidate",
    ("GET", f"{API}/candidates/{{candidate_id}}/curve"): "get_curve",
    ("GET", f"{API}/candidates/{{candidate_id}}/export"): "export_candidate",
}


def normalize_url(url: str) -> str:
    """The service's base URL: ``http://`` added when no scheme is given (``localhost:8000``
    -> ``http://localhost:8000``), a trailing ``/`` or ``/api/v1`` dropped. ValueError for
    an empty URL or a scheme other than http and https."""
    text = url.strip()
    if not text:
        raise ValueError("the server URL is empty; give one such as http://127.0.0.1:8000")
    if "://" not in text:
        text = "http://" + text
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(
            f"server URL {url!r}: the scheme must be http or https, not {scheme!r} "
            "(for example http://127.0.0.1:8000)"
        )
    text = text.rstrip("/")
    return text.removesuffix(API).rstrip("/")


@dataclass(frozen=True)
class Event:
    """One server-sent event of a campaign: its ``id`` (None for the closing ``end``
    event), its ``kind`` (``status``, ``progress``, ``candidate``, ``resumed``, ``end``
    ...) and its JSON ``data``."""

    id: int | None
    kind: str
    data: dict[str, Any]


class Client:
    """A client of one layerforge service.

    ``url`` defaults to ``LAYERFORGE_SERVER`` (else ``http://127.0.0.1:8000``; a URL without
    a scheme gets ``http://``), ``token`` to ``LAYERFORGE_API_TOKEN``: the bearer token a
    server with a token set requires on every POST and DELETE. ``timeout`` is per request,
    in seconds. Use it as a context manager, or call :meth:`close`, to release its
    connections.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = normalize_url(
            url if url is not None else os.environ.get(SERVER_VARIABLE) or DEFAULT_SERVER
        )
        token = token if token is not None else os.environ.get(TOKEN_VARIABLE) or None
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    # ------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def request(
        self, method: str, path: str, *, spec_body: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send one request to ``path`` (below the base URL); raise the typed error of a
        4xx/5xx answer, :class:`ServerUnreachable` when no answer comes."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise ServerUnreachable(self.url, _reason(err)) from None
        if response.status_code >= 400:
            raise self._error(response, spec_body=spec_body)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _error(self, response: httpx.Response, *, spec_body: bool) -> ApiError:
        status = response.status_code
        code, message, fields = f"http_{status}", "", []
        try:
            body = response.json()
            error = body["error"]
            code = str(error.get("code") or code)
            message = str(error.get("message") or "")
            fields = [
                (str(f.get("path", "")), str(f.get("message", "")))
                for f in error.get("fields") or []
                if isinstance(f, dict)
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            message = response.text[:500].strip()
        message = message or response.reason_phrase or f"HTTP {status}"
        retry_after = _seconds(response.headers.get("retry-after"))
        request = response.request
        kind = RemoteSpecError if spec_body and status == 422 else error_class(status)
        return kind(
            status,
            code,
            message,
            method=request.method,
            url=str(request.url),
            fields=fields,
            retry_after=retry_after,
        )

    # ------------------------------------------------------------ service
    def health(self) -> dict[str, Any]:
        """``GET /healthz``: liveness, the database's reachability and schema revision, the
        version (a degraded service answers too: read ``status``)."""
        return self._json("GET", "/healthz")

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        return self.request("GET", "/metrics").text

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the API's OpenAPI document."""
        return self._json("GET", "/openapi.json")

    def list_ops(self, kind: str | None = None) -> list[dict[str, Any]]:
        """``GET /ops``: the grammar's ops with arity and spaces (of one space ``kind``:
        ``activation`` or ``normact``, or all)."""
        return self._json("GET", f"{API}/ops", params=_params(kind=kind))

    def list_builtins(self, kind: str | None = None) -> list[str]:
        """``GET /builtins``: names of the built-in layers (usable as seeds)."""
        return self._json("GET", f"{API}/builtins", params=_params(kind=kind))

    # ------------------------------------------------------------ campaigns
    def create_campaign(self, spec: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST /campaigns``: submit a spec (a dict, a JSON or YAML file path, or a
        CampaignSpec); returns the queued campaign (``CampaignDetail``).

        A retried call with the same ``idempotency_key`` returns the same campaign instead of
        a second one; without one a fresh key is made for this call. An invalid spec raises
        :class:`~layerforge.errors.RemoteSpecError` (both a ``ValidationError`` with the
        API's message and a ``SpecError`` with ``fields`` relative to the spec).
        """
        body = load_spec(spec)
        key = idempotency_key or str(uuid.uuid4())
        return self._json(
            "POST",
            f"{API}/campaigns",
            json=body,
            headers={"Idempotency-Key": key},
            spec_body=True,
        )

    def list_campaigns(
        self, status: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``GET /campaigns``: one page of campaigns, newest first (``items``, and
        ``next_cursor`` to pass back for the next page, or None)."""
        return self._json(
            "GET", f"{API}/campaigns", params=_params(status=status, limit=limit, cursor=cursor)
        )

    def iter_campaigns(self, status: str | None = None, *, page_size: int = 100) -> Iterator[dict]:
        """Every campaign (optionally of one ``status``), newest first, page after page."""
        cursor = None
        while True:
            page = self.list_campaigns(status, limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_campaign(self, campaign_id: int) -> dict[str, Any]:
        """``GET /campaigns/{id}``: status, counts, funnel, best values, hypervolume,
        estimate of what is left, and the spec."""
        return self._json("GET", f"{API}/campaigns/{int(campaign_id)}")

    def pause_campaign(self, campaign_id: int) -> dict[str, Any]:
        """``POST /campaigns/{id}/pause``: a queued or running campaign stops proposing;
        what is in flight finishes. ConflictError from any other status."""
        return self._json("POST", f"{API}/campaigns/{int(campaign_id)}/pause")

    def resume_campaign(self, campaign_id: int) -> dict[str, Any]:
        """``POST /campaigns/{id}/resume``: a paused campaign runs again."""
        return self._json("POST", f"{API}/campaigns/{int(campaign_id)}/resume")

    def cancel_campaign(self, campaign_id: int) -> dict[str, Any]:
        """``POST /campaigns/{id}/cancel``: stop a queued, running or paused campaign for
        good (what it found stays readable)."""
        return self._json("POST", f"{API}/campaigns/{int(campaign_id)}/cancel")

    def delete_campaign(self, campaign_id: int) -> None:
        """``DELETE /campaigns/{id}``: delete a finished campaign and all it holds
        (ConflictError while it is queued, running or paused: cancel it first)."""
        self.request("DELETE", f"{API}/campaigns/{int(campaign_id)}")

    def get_pareto(self, campaign_id: int) -> dict[str, Any]:
        """``GET /campaigns/{id}/pareto``: the objectives, the front and the dominated
        points (values by objective name; NaN and infinities as None)."""
        return self._json("GET", f"{API}/campaigns/{int(campaign_id)}/pareto")

    def get_transfer(self, campaign_id: int) -> dict[str, Any]:
        """``GET /campaigns/{id}/transfer``: the transfer stage's confirmation (held-out runs
        per candidate, ``beats_baseline``, the scale controls) and the ``confirmed`` ids."""
        return self._json("GET", f"{API}/campaigns/{int(campaign_id)}/transfer")

    def get_hypervolume(self, campaign_id: int, *, max_points: int = 2000) -> dict[str, Any]:
        """``GET /campaigns/{id}/hypervolume``: the hypervolume after each evaluation,
        downsampled to ``max_points``."""
        return self._json(
            "GET",
            f"{API}/campaigns/{int(campaign_id)}/hypervolume",
            params={"max_points": max_points},
        )

    def download_pareto(
        self,
        campaign_id: int,
        format: str = "csv",
        *,
        x: str | None = None,
        y: str | None = None,
        log_x: bool = False,
        log_y: bool = False,
        path: str | Path | None = None,
    ) -> bytes:
        """``GET /campaigns/{id}/pareto/download``: the front and the dominated points as
        CSV (every objective), or a figure (``svg``, ``png``) of objective ``y`` against
        ``x`` with the front as a staircase; written to ``path`` when given (a folder gets
        the server's file name). ConflictError (``nothing_to_download``) while the campaign
        has no completed candidate."""
        params = _params(format=format, x=x, y=y, log_x=log_x or None, log_y=log_y or None)
        return self._download(f"{API}/campaigns/{int(campaign_id)}/pareto/download", params, path)

    def download_hypervolume(
        self,
        campaign_id: int,
        format: str = "csv",
        *,
        normalize: bool = True,
        path: str | Path | None = None,
    ) -> bytes:
        """``GET /campaigns/{id}/hypervolume/download``: the hypervolume after each
        evaluation, raw and as a fraction of the reference box, as CSV or a figure (``svg``,
        ``png``; ``normalize`` plots the fraction); written to ``path`` when given."""
        return self._download(
            f"{API}/campaigns/{int(campaign_id)}/hypervolume/download",
            {"format": format, "normalize": normalize},
            path,
        )

    def get_optuna_study(self, campaign_id: int) -> dict[str, Any]:
        """``GET /campaigns/{id}/optuna``: the campaign's evaluated candidates as an Optuna
        study document (directions, distributions and one trial per candidate)."""
        return self._json("GET", f"{API}/campaigns/{int(campaign_id)}/optuna")

    def download_optuna(self, campaign_id: int, *, path: str | Path | None = None) -> bytes:
        """``GET /campaigns/{id}/optuna?format=sqlite``: the study as a SQLite file, which
        ``optuna.load_study(study_name=..., storage="sqlite:///FILE")`` and optuna-dashboard
        open; written to ``path`` when given (a folder gets the server's file name)."""
        return self._download(
            f"{API}/campaigns/{int(campaign_id)}/optuna", {"format": "sqlite"}, path
        )

    def export_optuna(
        self, campaign_id: int, storage: str, *, study_name: str | None = None
    ) -> str:
        """Write the campaign as a multi-objective Optuna study into the Optuna storage URL
        ``storage`` (``sqlite:///file.db``, ``postgresql://...``), named ``study_name``
        (default ``layerforge-campaign-ID``); returns the study's name. The study is
        written here, not by the service: ValueError for a storage Optuna cannot open or a
        name already taken there. Imports Optuna (only this method does)."""
        from layerforge.search.optuna_export import write_study

        document = self.get_optuna_study(campaign_id)
        return write_study(document, storage, study_name).study_name

    def _download(self, route: str, params: dict[str, Any], path: str | Path | None) -> bytes:
        response = self.request("GET", route, params=params)
        if path is not None:
            target = Path(path)
            if target.is_dir():
                target = target / _attachment_name(response, f"download.{params['format']}")
            target.write_bytes(response.content)
        return response.content

    def events(
        self,
        campaign_id: int,
        *,
        after: int = 0,
        follow: bool = True,
        reconnect_attempts: int = 3,
        stream_seconds: float | None = None,
    ) -> Iterator[Event]:
        """``GET /campaigns/{id}/events``: the campaign's server-sent events after event id
        ``after``, as :class:`Event` objects, ending with the ``end`` event once the
        campaign is finished and every event was sent.

        The server closes a stream after a few minutes; with ``follow`` the client reconnects
        from the last event it received (losing nothing) until the ``end`` event, retrying a
        dropped connection ``reconnect_attempts`` times a second apart. Without ``follow``
        it stops when the server closes the stream, which ``stream_seconds`` asks it to do
        after that many seconds.
        """
        cursor = after
        failures = 0
        while True:
            ended = False
            try:
                for event in self._event_stream(int(campaign_id), cursor, stream_seconds):
                    failures = 0
                    if event.id is not None:
                        cursor = event.id
                    yield event
                    if event.kind == "end":
                        ended = True
                        break
            except ServerUnreachable:
                failures += 1
                if failures > reconnect_attempts:
                    raise
                time.sleep(1.0)
                continue
            if ended or not follow:
                return

    def _event_stream(self, campaign_id: int, after: int, seconds: float | None) -> Iterator[Event]:
        path = f"{API}/campaigns/{campaign_id}/events"
        params: dict[str, Any] = {"after": after}
        if seconds is not None:
            params["timeout"] = min(max(seconds, 0.1), 3600.0)
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 60.0))
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as r:
                if r.status_code >= 400:
                    r.read()
                    raise self._error(r, spec_body=False)
                kind: str | None = None
                data: list[str] = []
                event_id: int | None = None
                for line in r.iter_lines():
                    if line == "":
                        if kind is not None:
                            yield Event(event_id, kind, _event_data("\n".join(data)))
                        kind, data, event_id = None, [], None
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id" and value.isdigit():
                        event_id = int(value)
        except httpx.TransportError as err:
            raise ServerUnreachable(self.url, _reason(err)) from None

    def wait(
        self,
        campaign_id: int,
        *,
        timeout: float | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> dict[str, Any]:
        """Follow the campaign's events until it is completed, cancelled or failed and
        return its final detail; ``on_event`` sees each event. TimeoutError after
        ``timeout`` seconds (the campaign keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        detail = self.get_campaign(campaign_id)
        cursor = 0
        while detail["status"] not in FINISHED:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"campaign {campaign_id} is still {detail['status']} after {timeout} s"
                )
            for event in self.events(
                campaign_id, after=cursor, follow=False, stream_seconds=remaining
            ):
                cursor = event.id if event.id is not None else cursor
                if on_event is not None:
                    on_event(event)
            detail = self.get_campaign(campaign_id)
        return detail

    # ------------------------------------------------------------ candidates
    def list_candidates(
        self,
        campaign_id: int,
        *,
        status: str | None = None,
        sort: str | None = None,
        order: str = "desc",
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """``GET /campaigns/{id}/candidates``: one page of candidates, by id or sorted by an
        objective (``sort``, ``order`` ``asc``/``desc``), optionally of one ``status``."""
        return self._json(
            "GET",
            f"{API}/campaigns/{int(campaign_id)}/candidates",
            params=_params(status=status, sort=sort, order=order, limit=limit, cursor=cursor),
        )

    def iter_candidates(
        self,
        campaign_id: int,
        *,
        status: str | None = None,
        sort: str | None = None,
        order: str = "desc",
        page_size: int = 200,
    ) -> Iterator[dict[str, Any]]:
        """Every candidate of the campaign, page after page (see :meth:`list_candidates`)."""
        cursor = None
        while True:
            page = self.list_candidates(
                campaign_id, status=status, sort=sort, order=order, limit=page_size, cursor=cursor
            )
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_candidate(self, candidate_id: int) -> dict[str, Any]:
        """``GET /candidates/{id}``: graph, text, LaTeX, lineage, evaluations, rejection
        stage and reason, objective values."""
        return self._json("GET", f"{API}/candidates/{int(candidate_id)}")

    def get_curve(self, candidate_id: int, *, points: int = 200) -> dict[str, Any]:
        """``GET /candidates/{id}/curve``: points to plot the function and its derivative
        (or a norm-act layer's response)."""
        return self._json(
            "GET", f"{API}/candidates/{int(candidate_id)}/curve", params={"points": points}
        )

    def export_candidate(
        self, candidate_id: int, format: str = "pytorch", *, path: str | Path | None = None
    ) -> str:
        """``GET /candidates/{id}/export``: the candidate as code (``pytorch``, ``numpy``,
        ``jax``, ``latex``, ``sympy`` or ``json``); also written to ``path`` when given (a
        folder gets the server's file name). A rejected or failed candidate's code comes with
        an :class:`~layerforge.errors.ExportWarning` saying so."""
        response = self.request(
            "GET", f"{API}/candidates/{int(candidate_id)}/export", params={"format": format}
        )
        warning = response.headers.get("x-layerforge-warning")
        if warning:
            warnings.warn(ExportWarning(warning), stacklevel=2)
        if path is not None:
            target = Path(path)
            if target.is_dir():
                target = target / _attachment_name(response, f"candidate_{candidate_id}.txt")
            target.write_text(response.text, encoding="utf-8")
        return response.text

    def best_candidate(self, campaign_id: int, objective: str | None = None) -> dict[str, Any]:
        """The completed candidate of the campaign with the best value of ``objective``
        (default: its first objective). :class:`~layerforge.errors.LayerforgeError` naming
        the campaign's counts when it has no completed candidate."""
        from layerforge.errors import LayerforgeError

        detail = self.get_campaign(campaign_id)
        objectives = detail["objectives"]
        chosen = next((o for o in objectives if o["name"] == objective), None)
        if objective is not None and chosen is None:
            names = ", ".join(o["name"] for o in objectives)
            raise LayerforgeError(
                f"{objective!r} is not an objective of campaign {campaign_id} (one of: {names})"
            )
        chosen = chosen or objectives[0]
        page = self.list_candidates(
            campaign_id,
            status="completed",
            sort=chosen["name"],
            order="desc" if chosen["maximize"] else "asc",
            limit=1,
        )
        if not page["items"]:
            counts = ", ".join(f"{n} {s}" for s, n in detail["counts"].items() if n) or "none"
            raise LayerforgeError(
                f"campaign {campaign_id} ({detail['status']}) has no completed candidate "
                f"to export yet; its candidates: {counts}"
            )
        return page["items"][0]


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _event_data(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"text": text}
    return data if isinstance(data, dict) else {"value": data}


def _reason(err: httpx.TransportError) -> str:
    if isinstance(err, httpx.TimeoutException):
        return f"no answer in time ({type(err).__name__})"
    text = str(err) or type(err).__name__
    return text


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _attachment_name(response: httpx.Response, default: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    if 'filename="' in disposition:
        name = disposition.split('filename="', 1)[1].split('"', 1)[0]
        if name and "/" not in name and "\\" not in name and not name.startswith("."):
            return name
    return default

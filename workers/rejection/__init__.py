"""The rejection protocol: ordered, cheap-to-expensive stages that throw bad candidates away.

Stages (a campaign picks which run through ``RejectionConfig.stages``; their order is fixed,
:class:`Stage` names them):

1. ``static``: the grammar's static check (depends on x, within limits, allowed ops).
2. ``probe``: forward and backward on a few probe batches (unit scale and large magnitude,
   train and eval mode, and the input ranks the proxies will feed): outputs and input
   gradients finite, output not constant, gradient not zero everywhere, and on unit-scale
   inputs output and gradient magnitudes under ``probe_max_output`` / ``probe_max_grad``.
3. ``duplicate``: the candidate's functional fingerprint was seen before (``seen(fp)``
   returns the earlier result): the earlier result is reused, no training happens.
4. ``stability``: can weight changes blow the gradients up? Norm-act layers: EvoNorm's
   adversarial gradient-norm test; activations: their slope must not grow with ``|x|``
   (:mod:`.stability`).
5. ``trainability``: cheap checks on the proxy networks themselves before real training:
   logits at initialisation finite, not exploding, not ignoring the input; the first
   ``trainability_steps`` steps keep the loss finite.
6. ``quality``: continue every proxy's run to ``quality_steps``; reject under
   ``quality_min_accuracy`` or on divergence.
7. ``depth``: activations only: a deeper MLP (the depth probe) trains for ``depth_steps``
   steps of the first proxy's schedule without a NaN/Inf loss (:mod:`.depth`).
8. ``full``: continue the same runs to each proxy's full ``steps`` (the quality stage is the
   first ``quality_steps`` of the full run, as in EvoNorm, so nothing is trained twice).

Layout: :mod:`.config` (stage names, :class:`RejectionSettings` shared with the campaign
spec, :class:`RejectionConfig`), :mod:`.registry` (``register_stage`` / ``get_stage``),
:mod:`.run` (the :class:`EvaluationRun` every stage reads and writes, verdicts),
:mod:`.checks` (static, probe, duplicate), :mod:`.stability`, :mod:`.proxies` (trainability,
quality, full), :mod:`.depth` and :mod:`.protocol` (the loop, :func:`evaluate_candidate`).

:func:`evaluate_candidate` never raises for a bad candidate: NaN/Inf, out-of-memory, an
exception in the candidate's code and the time limit are all recorded verdicts
(``status="rejected"`` with the stage and a reason). Bad *input* that is not the candidate's
fault (an unknown architecture or dataset in the proxies, a bad config) gives
``status="failed"`` with the error message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerforge.workers.rejection.config import (
    REJECTION_STAGES,
    STAGES,
    RejectionConfig,
    RejectionSettings,
    Stage,
)

if TYPE_CHECKING:
    from layerforge.workers.rejection.protocol import evaluate_candidate
    from layerforge.workers.rejection.registry import get_stage, list_stages, register_stage
    from layerforge.workers.rejection.run import EvaluationRun, StageVerdict, is_oom

# The settings are light (pydantic) and the campaign spec imports them; the protocol imports
# torch and the training loop, so its names load on first use.
_LAZY = {
    "evaluate_candidate": "protocol",
    "get_stage": "registry",
    "list_stages": "registry",
    "register_stage": "registry",
    "EvaluationRun": "run",
    "StageVerdict": "run",
    "is_oom": "run",
}

__all__ = [
    "REJECTION_STAGES",
    "STAGES",
    "EvaluationRun",
    "RejectionConfig",
    "RejectionSettings",
    "Stage",
    "StageVerdict",
    "evaluate_candidate",
    "get_stage",
    "is_oom",
    "list_stages",
    "register_stage",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)

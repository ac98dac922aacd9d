"""layerforge workers: where candidates meet data.

- :mod:`workers.datasets`: ``DATASETS``, ``load_dataset`` (device tensors, cached once per
  process, load counts), ``BatchSampler`` and on-device augmentation.
- :mod:`workers.architectures`: ``ARCHITECTURES``, ``build_model`` (resnet, mobilenetv2,
  efficientnet, mlp, transformer; candidate placement per campaign kind; cpu/gpu scale).
- :mod:`workers.tasks`: ``ProxyTask``.
- :mod:`workers.training`: ``train``, ``run_proxy``, ``Trainer``, ``TrainResult``.
- :mod:`workers.memory_format`: ``choose_memory_format`` (contiguous or channels_last per
  architecture, kind, device and model; the measurements behind it).
- :mod:`workers.costs`: ``measure_layer_cost``.
- :mod:`workers.candidates`: ``resolve_candidate``, ``Candidate`` (the accepted JSON forms).
- :mod:`workers.rejection`: ``RejectionConfig``, ``evaluate_candidate`` (the staged protocol).
- :mod:`workers.jobs`: ``EvaluationJob`` and ``EvaluationResult``, what every evaluator and
  the controller exchange (rung results and checkpoints for successive halving included).
- :mod:`workers.pool`: ``EvaluatorPool``, ``EvaluatorActor``, ``PoolResult``, ``ray_connect``.
- :mod:`workers.errors`: ``UnknownNameError``, ``DatasetUnavailableError``,
  ``InvalidConfigError``.

Importing ``workers`` imports nothing heavy; import the submodules you need (``workers.pool``
imports Ray).
"""

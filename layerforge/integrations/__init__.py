"""Bridges from layerforge to the tools researchers already use, each an optional extra.

- :mod:`layerforge.integrations.timm`: a found layer as timm's ``act_layer=`` / ``norm_layer=``.
- :mod:`layerforge.integrations.mlflow`: campaigns and their candidates logged as MLflow runs
  (``pip install 'layerforge[mlflow]'``, ``LAYERFORGE_MLFLOW_TRACKING_URI``).

Nothing here is imported by the rest of layerforge unless asked for, so none of these
libraries is needed to run a campaign.
"""

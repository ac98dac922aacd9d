"""layerforge: discover activation functions and normalization-activation layers by evolution.

The packages install as one namespace: ``layerforge.grammar`` (layers as graphs),
``layerforge.workers`` (training and rejection), ``layerforge.search`` (the controller),
``layerforge.storage`` (the database) and ``layerforge.api`` (the HTTP service).
"""

"""``python -m layerforge``: the ``layerforge`` command where its script is not on PATH."""

from layerforge.cli import app

app(prog_name="layerforge")

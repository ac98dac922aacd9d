"""layerforge api package: the FastAPI service, its dashboard, settings and the CLI."""


def layerforge_version() -> str:
    """The installed version of layerforge (cheap: no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("layerforge")
    except PackageNotFoundError:  # running from a source tree without metadata
        return "0+unknown"


API_PREFIX = "/api/v1"  # every API route lives under it

"""layerforge search package."""

"""layerforge api package."""

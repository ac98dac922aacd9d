"""layerforge storage package."""

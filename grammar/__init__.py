"""layerforge grammar package."""

"""layerforge workers package."""

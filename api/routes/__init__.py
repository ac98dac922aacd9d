"""Route modules of the HTTP API (thin: validation and shaping; the work is in search/storage)."""

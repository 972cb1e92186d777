"""One module per group of routes; each exposes `router`."""

"""dockvols admin web page and host-side /metrics (a separate process)."""

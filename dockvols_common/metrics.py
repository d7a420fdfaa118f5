"""What both halves' Prometheus expositions share, so one dashboard reads them alike: the
duration buckets of an operation and the text format's content type. (esx_service writes the
format itself, being stdlib-only; the plugin uses prometheus_client.)"""

from __future__ import annotations

# Operations take from a few milliseconds (a Get) to minutes (eager-zeroing a large disk).
OP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
              120.0, 300.0, 600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

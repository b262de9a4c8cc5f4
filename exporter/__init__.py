"""cloudjob-exporter: turns asynchronous cloud jobs into Prometheus metrics."""

__version__ = "0.1.0"

"""Monitoring mixin: the Grafana dashboard and Prometheus rules, generated from Python.

`python -m dashboards.generate` writes the committed files; a test fails when they drift.
"""

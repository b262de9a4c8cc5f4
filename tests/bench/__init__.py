"""`make bench`: polling, scrape and memory figures of the exporter next to their anchors.

A script, not a test suite (`python -m tests.bench.run`); tests/test_bench.py only checks that it
runs on a tiny size.
"""

"""The benchmark's modules are a script and its helper processes, never tests: a future
`test_*.py` here must not make `pytest` start simulators and exporters for minutes."""

collect_ignore_glob = ["*.py"]

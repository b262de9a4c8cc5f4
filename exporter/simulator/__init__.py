"""Fake clouds for --demo, integration tests and benchmarks: real aiohttp apps on a fake clock."""

from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_JOBS,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    SIMULATOR_KEY,
    MetaStudioSimulator,
    demo_simulator,
    start_simulator,
)
from exporter.simulator.scripts import (
    ALL_SCRIPTS,
    AssessProperty,
    AssessResult,
    Failure,
    Script,
    Step,
)

__all__ = [
    "ALL_SCRIPTS",
    "DEMO_ACCESS_KEY",
    "DEMO_JOBS",
    "DEMO_PROJECT_ID",
    "DEMO_SECRET_KEY",
    "SIMULATOR_KEY",
    "AssessProperty",
    "AssessResult",
    "Failure",
    "MetaStudioSimulator",
    "Script",
    "Step",
    "demo_simulator",
    "start_simulator",
]

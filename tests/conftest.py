"""Shared pytest configuration: fixtures live in tests/fixtures and are registered here."""

import os

# cpu-small's default verdict is the committed delta's LLM (agpt.wiring.detector). The suite
# runs the calibrated threshold (and its subprocesses, which inherit this) unless a test asks
# for an LLM: tests/agpt/test_wiring_cpu_delta.py checks the default, test_cpu_small_delta.py
# the committed delta's figures; the worker, browser and fault tests keep the threshold's pace.
os.environ["AGPT_CPU_VERDICT"] = "threshold"

pytest_plugins: list[str] = [
    "tests.fixtures.database",
    "tests.fixtures.kafka",
    "tests.fixtures.models",
    "tests.fixtures.images",
    "tests.fixtures.processes",
    "tests.fixtures.s3",
    "tests.fixtures.pools",
]

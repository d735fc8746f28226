"""Shared pytest configuration: fixtures live in tests/fixtures and are registered here."""

pytest_plugins: list[str] = [
    "tests.fixtures.database",
    "tests.fixtures.kafka",
    "tests.fixtures.models",
    "tests.fixtures.images",
    "tests.fixtures.processes",
    "tests.fixtures.s3",
    "tests.fixtures.pools",
]

"""Composition root of the agpt inspection service: settings, CLI, demo, benchmarks."""

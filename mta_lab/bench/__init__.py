"""Benchmarks (`mta-lab bench ...`): measured, written under reports/bench/, never asserted in tests."""

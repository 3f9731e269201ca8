"""Measurements for `verify` checks and guards: Prometheus queries and live objects."""

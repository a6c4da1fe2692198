"""Fixtures shared by the whole suite live in these plugin modules, one per area."""

pytest_plugins = ["tests.fixtures_servers", "tests.fixtures_upstream", "tests.fixtures_slack"]

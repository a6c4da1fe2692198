"""Fixtures that start the upstream sandboxes (bot/sandbox) on free ports."""

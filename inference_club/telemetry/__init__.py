"""Metrics and log lines shared by the hub and the agent (no import-time state)."""

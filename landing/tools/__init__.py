"""Helpers for the landing that the build does not need (sample clips)."""

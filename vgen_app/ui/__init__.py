"""Reflex pages with their (thin) states."""

"""Loyalty services: every write that matters (see DESIGN.md §3)."""

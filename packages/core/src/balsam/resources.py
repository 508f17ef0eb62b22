"""Placeholder: filled by the launcher work (free nodes a select_tasks policy sees)."""

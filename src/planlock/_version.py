"""The package version (one place; below every layer)."""

__version__ = "0.1.0"

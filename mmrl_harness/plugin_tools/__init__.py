"""Tools for plugin authors behind ``mmrl plugins``: listing, ``doctor`` and ``new``."""

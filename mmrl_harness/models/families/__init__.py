"""The built-in VLM families, one module each: anatomy, processor quirks and tiny offline build.

Each module defines one ``Anatomy`` constant, registered under the ``mmrl_harness.architectures``
entry-point group in ``pyproject.toml`` exactly as a third-party family plugin would be, so adding
a family is one file plus one entry point (docs/plugins.md, "Adding a VLM family").
"""

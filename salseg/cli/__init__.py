"""Command-line entry points behind the ``salseg-*`` console scripts and the root shims."""

"""The ``pydamon`` command."""

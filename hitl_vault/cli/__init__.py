"""The ``hitl-vault`` command: one module per group of commands."""

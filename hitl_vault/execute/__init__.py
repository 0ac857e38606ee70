"""Carrying out an approved action: executors and the processes they run."""

"""The engine under a Vault: every operation on requests (submit, decide, run, time out,
wait, verify), for the Vault, the daemon, its workers and ``approval()``. :class:`Engine`
(in ``core``) holds the rest, each handed what it uses."""

from .core import Engine

__all__ = ["Engine"]

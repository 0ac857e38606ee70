"""``python: module:function`` rules in ``hitl-vault.yaml``: the function they name, found
on the Python path or in the vault folder, imported the first time a proposal reaches it.

The module is trusted as the rules file is: before it runs, its file and the folder
holding it (and each package above it) are checked with
:func:`~hitl_vault.policy.trust.check_module`, and a module others may write is refused.
Nothing is imported while the rules are read, so a gate call that no ``python:`` rule
matches imports nothing more. A function that cannot be loaded or refused raises
:class:`~hitl_vault.errors.RulesError`; :meth:`~hitl_vault.policy.rules.Rule.match` turns
that into the rule's ``on_error`` decision.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RulesError
from .rules import Decision
from .trust import check_module

# ``on_error:``: what a python rule says when its function cannot (raises, will not load).
ON_ERROR = {"pending": Decision.ASK, "reject": Decision.BLOCK}
# A python rule's ``decision`` until its function answers (what reads rules unrun sees).
STANDS_IN = Decision.ASK

_LOADED: dict[tuple[str, str], Callable[[Any], Any]] = {}
_LOCK = threading.Lock()
_FIX = "put the module in the vault folder, or install it where hitl-vault's Python finds it"


@dataclass(frozen=True)
class PythonRule:
    """A rule's ``python: module:function``: called with the proposal, it returns what the
    function returns. ``root``: the vault folder, searched after the Python path."""

    target: str
    root: str = ""

    def __call__(self, proposal: Any) -> Any:
        return self.function()(proposal)

    def function(self) -> Callable[[Any], Any]:
        """The function, imported once per process (RulesError when it cannot be)."""
        key = (self.target, self.root)
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = _load(self.target, self.root)
            return _LOADED[key]


def _load(target: str, root: str) -> Callable[[Any], Any]:
    where = f"python: {target}"
    module_name, _, attr_path = target.partition(":")
    if root and root not in sys.path:
        sys.path.append(root)  # after the Python path: a vault file never shadows a library
    problem = untrusted(module_name)
    if problem is not None:
        raise RulesError(where, problem, "make the module and its folder yours alone")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        if missing and (module_name + ".").startswith(missing + "."):
            raise RulesError(where, f"no module named {missing!r}", _FIX) from None
        fix = "fix the module (or install what it needs) so it imports cleanly"
        raise RulesError(where, f"importing {module_name} failed: {_text(e)}", fix) from None
    for part in attr_path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            fix = "check the function name after the ':'"
            raise RulesError(where, f"{module_name} has no attribute {attr_path!r}", fix)
    if not callable(obj):
        fix = "point it at a function that takes the proposal"
        raise RulesError(where, f"{target} is a {type(obj).__name__}, not a function", fix)
    function: Callable[[Any], Any] = obj
    return function


def untrusted(module_name: str) -> str | None:
    """Why the module (or a package above it) may not be run: a file, folder or cache of it
    that others may write (None: none found; a module that is not there is importing's to
    report). Each package is checked before finding the next level runs its code."""
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:depth]))
        except Exception:
            return None
        if spec is None:
            return None
        files = [Path(spec.origin)] if spec.has_location and spec.origin else []
        files += [Path(p) / "__init__.py" for p in spec.submodule_search_locations or ()]
        errors = [e for f in files for e in check_module(f).errors]
        if errors:
            return "its module may be changed by others: " + "; ".join(dict.fromkeys(errors))
    return None


def _text(e: BaseException) -> str:
    message = str(e).strip()
    return f"{type(e).__name__}: {message}" if message else type(e).__name__

"""The stores behind :class:`hitl_vault.store.JournalStore`: SQLite (``sqlite*.py``, the
default, one class in ``sqlite.py`` over its collaborators) and the in-memory one that
:class:`hitl_vault.testing.MemoryJournal` assembles (``memory*.py``); a request's entries
replayed, shared by both; and the daemon lock. A new backend goes here, beside them."""

"""Journal backends behind :class:`hitl_vault.store.JournalStore` (SQLite today), the hash
chain, replay, and the daemon lock."""

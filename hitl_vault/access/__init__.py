"""People and credentials: who may ask, who may answer, and how a request proves it.

Kept in the store (never in the synced vault), changed only through the CLI by the
service's owner; every change goes in the store's service log.
"""

"""The daemon: the loop, its workers, the inbox, quiet periods, retries, the dashboard and
the notifier."""

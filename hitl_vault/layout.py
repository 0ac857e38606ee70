"""Where things are in a vault: the folders a request moves through, and hitl-vault's files."""

PENDING_FOLDER = "Pending_Approval"
APPROVED_FOLDER = "Approved"
DONE_FOLDER = "Done"
REJECTED_FOLDER = "Rejected"
INBOX_FOLDER = "Inbox"
REQUEST_FOLDERS = (PENDING_FOLDER, APPROVED_FOLDER, DONE_FOLDER, REJECTED_FOLDER)
RULES_FILE = "hitl-vault.yaml"
DASHBOARD_FILE = "Dashboard.md"
STATE_DIR = ".hitl"  # the journal and the daemon lock
JOURNAL_FILE = "journal.db"
LOCK_FILE = "daemon.lock"

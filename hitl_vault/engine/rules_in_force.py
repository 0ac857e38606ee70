"""The rules in force for a vault: hitl-vault.yaml read (its policy and notification
targets), the folder checked first for who may write it, and each change journaled."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from ..errors import VaultNotFoundError
from ..model import REQUEST_FOLDERS, RULES_FILE
from ..notify.config import NotifyConfig, read_notify_config
from ..policy.rules import Policy
from ..policy.rulesfile import parse_policy, rules_text
from ..policy.trust import check_vault, raise_for
from ..store import JournalStore

log = logging.getLogger("hitl_vault.engine")  # where these lines were always logged


def vault_root(path: str | Path) -> Path:
    """The vault folder ``path`` names, resolved: a folder with the rules file or a request
    folder (:class:`VaultNotFoundError` naming ``hitl-vault init`` otherwise)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise VaultNotFoundError(root, "create one with `hitl-vault init PATH`")
    if not (root / RULES_FILE).exists() and not any((root / f).is_dir() for f in REQUEST_FOLDERS):
        raise VaultNotFoundError(
            root, f"it has no {RULES_FILE} and no request folders; run `hitl-vault init {root}`"
        )
    return root.resolve()


def check_trust(root: Path) -> None:
    """Raise :class:`~hitl_vault.policy.trust.UntrustedVaultError` for a vault (or rules
    file) anyone else may write; log the warnings that do not stop it."""
    report = check_vault(root)
    for warning in report.warnings:
        log.warning("%s", warning)
    raise_for(report)


def read_rules(root: Path, *, check_urls: bool = False) -> tuple[Policy, NotifyConfig, str | None]:
    """The rules file's policy and notification targets, and its text to journal (None
    when there is no file). ``check_urls``: Apprise must read each ``notify:`` URL."""
    text = rules_text(root / RULES_FILE, RULES_FILE) or ""
    policy = parse_policy(text, RULES_FILE, root)
    notify = read_notify_config(text, RULES_FILE, check_urls=check_urls)
    return policy, notify, text or None


def record_policy(journal: JournalStore, text: str | None, now: datetime) -> None:
    """Journal the rules' text if it changed since last recorded, and log what changed."""
    summary = journal.record_policy(text, now)
    if summary is not None and summary.startswith("first load"):
        log.info("%s: %s", RULES_FILE, summary)
    elif summary is not None:
        log.info("%s changed:\n%s", RULES_FILE, summary)

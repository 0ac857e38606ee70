"""``hitl-vault init``: a new vault from ``vault_template/``, never overwriting a file."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from ..errors import UsageError
from ..model import INBOX_FOLDER, REQUEST_FOLDERS


def template_root() -> Traversable:
    """The installed template, or the one beside the package in a source checkout."""
    try:
        root = resources.files("hitl_vault.vault_template")
        if root.joinpath("hitl-vault.yaml").is_file():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "vault_template"  # hitl_vault/cli/ → the checkout


@dataclass
class InitReport:
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def _private(path: Path) -> None:
    """Nobody but the owner may write what init made, whatever the umask: hitl-vault refuses
    a vault whose rules or folders anyone may write."""
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) & ~0o022)


def _mkdir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        _private(path)


def _copy(source: Traversable, dest: Path, report: InitReport) -> None:
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name in ("__pycache__", "__init__.py"):
            continue
        target = dest / entry.name
        if entry.is_dir():
            _mkdir(target)
            _copy(entry, target, report)
        elif target.exists() or target.is_symlink():
            report.kept.append(target)
        else:
            with open(target, "xb") as f:
                f.write(entry.read_bytes())
            _private(target)
            report.created.append(target)


def init_vault(path: Path) -> InitReport:
    """Create the vault's folders and files; files that already exist are kept as they are."""
    if path.exists() and not path.is_dir():
        raise UsageError(str(path), "exists and is not a folder", "choose another path")
    _mkdir(path)
    report = InitReport()
    for folder in (INBOX_FOLDER, *REQUEST_FOLDERS):
        _mkdir(path / folder)
    _copy(template_root(), path, report)
    return report

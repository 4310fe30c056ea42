"""The exceptions batchmap raises; each carries a message a user can act on."""

from __future__ import annotations

EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, after a graceful stop


class BatchmapError(Exception):
    """Base of every error batchmap reports to its user; `exit_code` follows PRODUCT.md."""

    exit_code = 1


class InputError(BatchmapError):
    """Bad input: a missing or malformed CSV, a wrong option."""

    exit_code = 2


class LockedError(BatchmapError):
    """Another batchmap process is already working on this job database."""

    exit_code = 2


class AuthError(BatchmapError):
    """The API refused the key (401) or the account (403): the whole run stops."""

    exit_code = 3

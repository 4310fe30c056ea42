"""The exceptions batchmap raises and their exit codes (the README's "Exit codes"), in one place."""

from __future__ import annotations

EXIT_OK = 0  # every row ended `done` or `no_heatmap`
EXIT_FAILED = 1  # the run finished and some rows ended `failed`
EXIT_USAGE = 2  # usage or input error, a database that is not batchmap's, a job already locked
EXIT_AUTH = 3  # the API refused the key or the account (401/403)
EXIT_API_UNUSABLE = 4  # unreachable, every first answer 404, a server-requested wait over the cap
EXIT_STORAGE = 5  # disk full, read-only or damaged database, unwritable --out
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, after a graceful stop


class BatchmapError(Exception):
    """Base of every error batchmap reports to its user; `exit_code` follows the README."""

    exit_code = EXIT_FAILED


class InputError(BatchmapError):
    """Bad input: a missing or malformed CSV, a wrong option, a database that is not ours."""

    exit_code = EXIT_USAGE


class LockedError(BatchmapError):
    """Another batchmap process is already working on this job database."""

    exit_code = EXIT_USAGE


class AuthError(BatchmapError):
    """The API refused the key (401) or the account (403): the whole run stops."""

    exit_code = EXIT_AUTH


class ApiUnusableError(BatchmapError):
    """The API cannot be used as given: unreachable, every first answer 404, a wait too long.

    Rows are left `pending`; the message says what to check.
    """

    exit_code = EXIT_API_UNUSABLE


class StorageError(BatchmapError):
    """Local storage failed: disk full, read-only or damaged database, unwritable --out.

    The message names the file; rows are left consistent.
    """

    exit_code = EXIT_STORAGE

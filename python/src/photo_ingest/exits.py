"""Exit codes of every command, as docs/operations.md lists them."""

EXIT_OK = 0           # done; nothing failed
EXIT_FAILED = 1       # ran, and something failed (files, a scrub's findings, a mirror behind)
EXIT_USAGE = 2        # a wrong command line or configuration
EXIT_UNAVAILABLE = 3  # could not start: catalog, library, exiftool or Immich unreachable

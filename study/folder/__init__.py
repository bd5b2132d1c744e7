"""The study folder on disk: file names, metadata, the ledger and shared foundations, the driver lock, progress."""

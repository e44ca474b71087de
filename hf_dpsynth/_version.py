"""The package version (one place: the package face, the CLI, the ledger's provenance and the build read it)."""

__version__ = "0.1.0"

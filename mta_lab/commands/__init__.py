"""Subcommands of the `mta-lab` CLI, one module each."""

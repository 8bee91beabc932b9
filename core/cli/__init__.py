"""The command line: `core.cli.main` parses, one module per command group calls core."""

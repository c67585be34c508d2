"""CLI commands, one module each, registered on the group in rnnmnist/cli.py."""

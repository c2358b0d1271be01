"""Command-line applications behind `mofa <command>` and the example scripts."""

"""The `seglab` command: one module per subcommand, wired in `main.py`."""

"""The `i2i` command line: one module per subcommand. Nothing here imports torch at load time."""

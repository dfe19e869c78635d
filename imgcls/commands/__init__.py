"""What the CLI commands do: call the library, print, write files (cli.py only parses and calls these)."""

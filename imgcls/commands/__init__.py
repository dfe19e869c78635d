"""What each `imgcls` command does, between the CLI's parsing and the library: defaults, printing, files."""

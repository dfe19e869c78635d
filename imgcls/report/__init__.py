"""What people look at: the console display, CSV files and PNG plots."""

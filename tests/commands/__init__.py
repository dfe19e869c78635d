"""Tests of imgcls/commands/ (a package: its module names repeat those of the library they print for)."""

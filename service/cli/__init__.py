"""The `rlprune` command line: parsing, commands and the console (progress, signals); the only
code that prints. A thin shell over `jobs`."""

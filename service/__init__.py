"""Run folders and job state, the command line, benches and reports: everything with files."""

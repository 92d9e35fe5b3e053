"""The library's run folders: lifecycle (`run_job`, `resume_job`), checkpoint store, reports,
artifacts and measurement. It never prints and imports none of `cli`, `http` or `bench`."""

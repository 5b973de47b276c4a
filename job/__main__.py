"""`python -m job` is `genre-job`."""

from job.cli import main

main()

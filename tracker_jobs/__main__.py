"""`python -m tracker_jobs` is the `tracker-jobs` command."""

import sys

from tracker_jobs.cli import main

sys.exit(main())

"""`python -m rlprune` is the `rlprune` command."""

import sys

from rlprune.service.cli import main

sys.exit(main())

"""`python -m rlprune` is the `rlprune` command."""

import sys

from rlprune.service.cli.main import main

sys.exit(main())

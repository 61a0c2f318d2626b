"""`python -m agent`: the same as the `carfriend` command."""

import sys

from agent.cli import main

sys.exit(main())

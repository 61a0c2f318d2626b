"""`python -m agent.cli`: the same as the `carfriend` command."""

import sys

from agent.cli import main

sys.exit(main())

"""`python -m seglab ...`: the `seglab` command (also `torchrun ... -m seglab train ...`)."""

import sys

from seglab.cli.main import main

sys.exit(main())

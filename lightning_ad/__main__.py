"""``python -m lightning_ad`` = ``lightning-ad``."""

import sys

from lightning_ad.cli import main

sys.exit(main())

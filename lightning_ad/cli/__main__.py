"""``python -m lightning_ad.cli`` = ``lightning-ad``."""

import sys

from lightning_ad.cli import main

sys.exit(main())

"""``python -m labkit.cli`` = ``labkit``."""
import sys

from labkit.cli.main import main

sys.exit(main())

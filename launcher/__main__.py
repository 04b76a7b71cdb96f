"""``python -m launcher``: the same as the installed ``fedrobust`` command."""
import sys

from launcher.cli import main

sys.exit(main())

"""``python -m fedrobust``: the core commands (``fedrobust`` itself, from launcher.cli, adds simulate and deploy)."""
import sys

from fedrobust.cli import main

sys.exit(main())

import sys

from fedrobust.cli import main

sys.exit(main())

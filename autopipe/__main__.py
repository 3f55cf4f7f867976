import sys

from autopipe.cli import main

sys.exit(main())

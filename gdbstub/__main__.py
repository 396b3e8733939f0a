import sys

from gdbstub.cli import main

sys.exit(main())

import sys

from beit_gateway.cli import main

sys.exit(main())

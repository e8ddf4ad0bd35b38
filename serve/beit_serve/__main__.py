import sys

from beit_serve.cli import main

sys.exit(main())

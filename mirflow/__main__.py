import sys

from mirflow.cli.main import main

sys.exit(main())

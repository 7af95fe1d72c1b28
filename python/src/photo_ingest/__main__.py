import sys

from photo_ingest.cli import main

sys.exit(main())

import sys

from pydamon.workload.program import main

sys.exit(main())

"""`python -m flows.study`: the study's command line (flows/study/flow.py)."""

import sys

from flows.study.flow import main

sys.exit(main())

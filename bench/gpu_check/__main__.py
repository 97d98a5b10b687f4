"""`python -m bench.gpu_check` (`make gpu-check`)."""

import sys

from bench.gpu_check.runner import main

sys.exit(main())

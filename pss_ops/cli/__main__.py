"""`python -m pss_ops.cli`: how the local executor and the Airflow operators run `pss step` with their own interpreter."""

from __future__ import annotations

import sys

from pss_ops.cli import main

sys.exit(main())

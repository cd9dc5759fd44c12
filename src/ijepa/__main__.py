"""``python -m ijepa`` (also what ``torchrun -m ijepa`` runs)."""

import sys

from ijepa.cli import main

sys.exit(main())

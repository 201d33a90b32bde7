"""``python -m advsmooth`` (also what ``torchrun -m advsmooth`` runs)."""

from advsmooth.cli import main

raise SystemExit(main())

"""``python -m celeriac`` runs the command line."""

from __future__ import annotations

from celeriac.cli.main import main

if __name__ == "__main__":
    main()

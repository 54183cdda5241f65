"""`python -m convzoo`: the same commands as the `convzoo` console script."""

from convzoo.cli import app

app()

"""`python -m export`: the export stage's command line (export/cli.py).

It needs PyTorch, typer and ONNX's tools, which the development environment has (`make test` or
`make models` builds it in .venv) and the serving one (`make run`, .venv-serve) has not."""

import sys

DEVELOPMENT = (
    "python -m export needs the development environment ({missing} is not installed in this one, {python}): "
    "run `make models` to rebuild the Fashion-MNIST zoo, or `.venv/bin/python -m export ...` "
    "(`make test` or `make models` creates .venv)."
)

try:
    from export.cli import app
except ModuleNotFoundError as exc:
    top = (exc.name or "").partition(".")[0]
    if top in ("", "export", "service"):
        raise  # a bug of our own, not a missing dependency
    sys.exit(DEVELOPMENT.format(missing=top, python=sys.executable))

app(prog_name="python -m export")

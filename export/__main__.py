from export.cli import app

app(prog_name="python -m export")

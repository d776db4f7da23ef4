"""`python -m scaffold` runs the command line."""

from scaffold.cli import app

app(prog_name="scaffold")

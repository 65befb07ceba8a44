"""``python -m resolver`` is the ``geoweb`` command."""

from .cli import main

main(prog_name="geoweb")

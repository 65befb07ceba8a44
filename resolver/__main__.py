"""``python -m resolver`` is the ``geoweb`` command."""

from resolver.cli.main import main

main(prog_name="geoweb")

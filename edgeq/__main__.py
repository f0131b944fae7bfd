from edgeq.cli.main import run

run()

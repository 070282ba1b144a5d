from clipmed.cli import app

app(prog_name="clipmed")

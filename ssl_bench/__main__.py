from ssl_bench.cli import app

app(prog_name="ssl-bench")

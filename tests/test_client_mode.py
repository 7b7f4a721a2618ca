"""The lab as a client of a shared tracking server: what a user sees when the server is
missing, refuses a login, or denies a permission."""

from __future__ import annotations

import socket

from conftest import bedrot


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_does_not_answer_is_one_line_at_once(cli_env: dict[str, str], write_plugin) -> None:
    # MLflow's own client retries a refused connection for about four minutes
    write_plugin("hello", """
        from bedrot_lab import experiment, hookimpl

        @experiment("hello")
        def hello(ctx):
            ctx.log_metric("answer", 42)

        @hookimpl
        def register_experiments(register):
            register(hello)
    """)
    uri = f"http://127.0.0.1:{free_port()}"
    for command in (("runs", "list"), ("run", "hello")):
        done = bedrot(*command, env={**cli_env, "MLFLOW_TRACKING_URI": uri}, timeout=60)
        assert done.returncode == 1, done
        assert f"cannot reach the tracking server {uri} (connection refused)" in done.stderr
        assert "Traceback" not in done.stderr

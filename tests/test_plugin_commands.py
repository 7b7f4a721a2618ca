"""Plugins extend the command line (``register_commands``): run for real in subprocesses
against temporary lakes whose plugins/ folder holds the plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bedrot
from test_cli import imported_by

GREET = '''
    import click

    from bedrot_lab import UsageError, hookimpl


    @hookimpl
    def register_commands(cli):
        @cli.command()
        @click.argument("who")
        @click.pass_obj
        def hello(state, who):
            """Greet WHO from the lake."""
            if who == "nobody":
                raise UsageError("nobody is not a name; greet someone")
            if who == "bug":
                raise RuntimeError("the greeting broke")
            click.echo(f"hello {who} from {state.lab.settings.root}")
            click.echo("plugins: " + ", ".join(sorted(state.lab.plugins.infos)))

        @cli.group()
        def greetings():
            """Greetings kept by the greet plugin."""

        @greetings.command("count")
        def count():
            """Count the greetings."""
            click.echo("0 greetings")
'''


def help_sections(text: str) -> dict[str, str]:
    """``--help`` output by section heading ("Commands", "Plugin commands" ...)."""
    sections: dict[str, str] = {}
    heading = ""
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            heading = line[:-1]
            sections[heading] = ""
        elif heading:
            sections[heading] += line + "\n"
    return sections


def command_names(section: str) -> list[str]:
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2] != " "]


def test_a_plugin_command_is_listed_under_its_own_heading_with_its_plugin(write_plugin, bedrot_lake: Path,
                                                                          cli_env) -> None:
    write_plugin("greet", GREET)
    done = bedrot("--help", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 0, done.stderr
    sections = help_sections(done.stdout)
    assert command_names(sections["Plugin commands"]) == ["greetings", "hello"]
    assert "Greet WHO from the lake. (plugin greet)" in sections["Plugin commands"]
    assert "run" in command_names(sections["Commands"])
    assert "hello" not in command_names(sections["Commands"])
    assert list(sections).index("Plugin commands") > list(sections).index("Commands")


def test_help_without_plugin_commands_has_no_plugin_heading(bedrot_lake: Path, cli_env) -> None:
    done = bedrot("--help", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 0, done.stderr
    assert "Plugin commands" not in done.stdout
    assert "run" in command_names(help_sections(done.stdout)["Commands"])


def test_a_plugin_command_runs_and_gets_the_lab(write_plugin, bedrot_lake: Path, cli_env) -> None:
    write_plugin("greet", GREET)
    done = bedrot("hello", "Ada", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"hello Ada from {bedrot_lake}"
    assert "greet" in lines[1].removeprefix("plugins: ").split(", ")
    group = bedrot("greetings", "count", env=cli_env, cwd=bedrot_lake)
    assert (group.returncode, group.stdout) == (0, "0 greetings\n"), group.stderr


def test_a_plugin_command_of_the_lake_named_by_lake_before_help(write_plugin, bedrot_lake: Path, cli_env,
                                                                tmp_path: Path) -> None:
    write_plugin("greet", GREET)
    env = {k: v for k, v in cli_env.items() if k != "BEDROT_LAKE"}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = bedrot("--lake", str(bedrot_lake), "--help", env=env, cwd=outside)
    assert done.returncode == 0, done.stderr
    assert "hello" in command_names(help_sections(done.stdout)["Plugin commands"])
    assert "Plugin commands" not in bedrot("--help", env=env, cwd=outside).stdout


def test_a_plugin_commands_failure_is_one_line_naming_the_plugin(write_plugin, bedrot_lake: Path, cli_env) -> None:
    write_plugin("greet", GREET)
    done = bedrot("hello", "bug", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "Error: hello (a command of plugin 'greet') failed: RuntimeError: the greeting broke; "
        "--debug shows the traceback"]
    debug = bedrot("--debug", "hello", "bug", env=cli_env, cwd=bedrot_lake)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "RuntimeError: the greeting broke" in debug.stderr


def test_a_plugin_commands_user_error_is_the_clis_one_line(write_plugin, bedrot_lake: Path, cli_env) -> None:
    write_plugin("greet", GREET)
    done = bedrot("hello", "nobody", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 2  # a UsageError's exit code, as for built-in commands
    assert done.stderr.splitlines() == ["Error: nobody is not a name; greet someone"]


def test_a_command_named_like_a_built_in_one_is_refused(write_plugin, bedrot_lake: Path, cli_env) -> None:
    write_plugin("clash", '''
        import click

        from bedrot_lab import hookimpl


        @hookimpl
        def register_commands(cli):
            @cli.command()
            def run():
                """Not the real run."""
                click.echo("the plugin's run")

            @cli.command()
            def wave():
                """Wave."""
                click.echo("wave")
    ''')
    done = bedrot("--help", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 0, done.stderr
    refusals = [line for line in done.stderr.splitlines() if "refused" in line]
    assert refusals == [f"plugin 'clash' ({bedrot_lake / 'plugins' / 'clash.py'}:9) command 'run' refused: "
                        "a built-in command has that name; give the plugin's command another name"]
    assert command_names(help_sections(done.stdout)["Plugin commands"]) == ["wave"]
    real = bedrot("run", "--help", env=cli_env, cwd=bedrot_lake)
    assert "Run an experiment" in real.stdout
    assert bedrot("wave", env=cli_env, cwd=bedrot_lake).stdout == "wave\n"


def test_a_command_two_plugins_add_is_refused_for_both(write_plugin, bedrot_lake: Path, cli_env) -> None:
    write_plugin("greet", GREET)
    write_plugin("copycat", '''
        import click

        from bedrot_lab import hookimpl


        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                """Another hello."""
    ''')
    done = bedrot("hello", "Ada", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 2
    refusals = sorted(line.partition("plugin ")[2] for line in done.stderr.splitlines() if "refused" in line)
    assert [line.split(" (")[0] for line in refusals] == ["'copycat'", "'greet'"]
    assert all("command 'hello' refused: plugin" in line for line in refusals)
    assert "'greet' adds a command of that name too" in refusals[0]
    assert "'copycat' adds a command of that name too" in refusals[1]
    assert "No such command 'hello'" in done.stderr
    assert bedrot("greetings", "count", env=cli_env, cwd=bedrot_lake).stdout == "0 greetings\n"


def test_a_plugin_raising_in_register_commands_is_reported_and_the_cli_works(write_plugin, bedrot_lake: Path,
                                                                             cli_env) -> None:
    write_plugin("greet", GREET)
    write_plugin("broken", '''
        from bedrot_lab import hookimpl


        @hookimpl
        def register_commands(cli):
            cli.command("half-done")(lambda: None)
            raise RuntimeError("no commands today")
    ''')
    done = bedrot("--help", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"plugin 'broken' ({bedrot_lake / 'plugins' / 'broken.py'}:8) commands left out: "
        "register_commands raised RuntimeError: no commands today"]
    assert command_names(help_sections(done.stdout)["Plugin commands"]) == ["greetings", "hello"]
    assert bedrot("hello", "Ada", env=cli_env, cwd=bedrot_lake).returncode == 0
    listed = bedrot("experiments", "list", env=cli_env, cwd=bedrot_lake)
    assert listed.returncode == 0, listed.stderr


def test_strict_mode_makes_a_raising_plugin_an_error_and_help_still_works(write_plugin, bedrot_lake: Path,
                                                                           cli_env) -> None:
    write_plugin("greet", GREET)
    write_plugin("broken", '''
        from bedrot_lab import hookimpl


        @hookimpl
        def register_commands(cli):
            raise RuntimeError("no commands today")
    ''')
    env = {**cli_env, "BEDROT_LAB_STRICT_PLUGINS": "1"}
    done = bedrot("--help", env=env, cwd=bedrot_lake)
    assert done.returncode == 0, done.stderr
    listed = help_sections(done.stdout)["Plugin commands"]
    assert listed.startswith("  not loaded: plugin 'broken' (") and "no commands today" in listed
    refused = bedrot("hello", "Ada", env=env, cwd=bedrot_lake)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith(
        "Error: no command 'hello'; plugin commands could not be loaded: plugin 'broken' (")


def test_a_broken_config_leaves_help_working_and_says_why(write_plugin, bedrot_lake: Path, cli_env) -> None:
    write_plugin("greet", GREET)
    (bedrot_lake / "bedrot-lab.toml").write_text("[lake\n")
    done = bedrot("--help", env=cli_env, cwd=bedrot_lake)
    assert done.returncode == 0
    config = bedrot_lake / "bedrot-lab.toml"
    assert help_sections(done.stdout)["Plugin commands"].startswith(f"  not loaded: {config}: not valid TOML (")
    unknown = bedrot("hello", "Ada", env=cli_env, cwd=bedrot_lake)
    assert unknown.returncode == 2
    assert "no command 'hello'; plugin commands could not be loaded" in unknown.stderr


def test_help_with_a_plugin_command_imports_neither_mlflow_nor_pandas(write_plugin, bedrot_lake: Path,
                                                                      cli_env) -> None:
    write_plugin("greet", GREET)
    modules = imported_by(["--help"], cli_env, bedrot_lake)
    assert "bedrot_lab_local" in modules  # the lake's plugin really was loaded, for its command
    assert "mlflow" not in modules
    assert "pandas" not in modules


@pytest.mark.parametrize("args", [["plugins", "hooks"], ["run", "--help"]])
def test_built_in_commands_load_no_plugin(write_plugin, bedrot_lake: Path, cli_env, args: list[str]) -> None:
    write_plugin("greet", GREET)
    assert "bedrot_lab_local" not in imported_by(args, cli_env, bedrot_lake)

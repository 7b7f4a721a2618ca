"""Every hook bedrot-lab calls. This module is the hook reference: ``docs/hooks.md`` is
generated from it (``python -m bedrot_lab.cli.reference hooks > docs/hooks.md``).

A plugin is a module (or any object) with functions marked ``@hookimpl``, named
after the hooks below. An implementation may take any subset of the hook's
arguments, always by name. ``bedrot-lab plugins hooks`` lists them. Built-in
features are plugins too (``bedrot_lab/builtin/``, ``bedrot_lab/sandbox/hooks.py``),
registered through these same hooks.

Call order follows pluggy: the plugin registered last runs first. Built-ins are
registered first, so a lake's own plugins come before them.

A plugin's failure stays its own. The ``register_*`` hooks, ``validate_run``,
``run_tags``, ``on_run_end``, ``on_run_failure``, ``sandbox_rules`` and
``handle_violation`` call each plugin's implementation on its own (still
through pluggy, so ``BEDROT_LAB_TRACE_PLUGINS=1`` logs each call, and a
``wrapper=True`` implementation wraps each one): one that raises,
``sys.exit()`` included, is reported in one line naming the plugin and left
out, and the others still run. A ``register_*`` hook that raises contributes
nothing, not even what it registered before raising, and ``bedrot-lab plugins
list`` shows its plugin as failed. An exception in ``before_run``,
``after_run``, ``validate_promotion`` or ``after_promotion`` is not isolated:
it fails the run or the promotion.
"""

from __future__ import annotations

import pluggy

PROJECT = "bedrot_lab"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_settings(register):
    """Claim a table of ``bedrot-lab.toml`` for a feature, and check it.

    Args:
        register: call ``register(table, check)``: ``table`` is the table's name
            (``"sandbox"``); ``check(values, path)`` gets the table's raw values (a
            dict) and the config file's path when the lake's file has that table, and
            raises :class:`bedrot_lab.ConfigError` naming the key of a mistake.

    The core checks its own tables (``[lake]``, ``[zones]``, ``[tracking]``,
    ``[plugins]``, ``[experiments]``); a table that no plugin claims is an error.
    Every command that opens the lake runs the checks, so a mistake is named at
    once. Read the values later from ``settings.tables[table]``.

    Example::

        from bedrot_lab import ConfigError, hookimpl

        def check_slack(values, path):
            if not str(values.get("channel", "")).startswith("#"):
                raise ConfigError("a channel starts with #", path, "slack.channel")

        @hookimpl
        def register_settings(register):
            register("slack", check_slack)
    """


@hookspec
def register_experiments(register):
    """Contribute experiments.

    Args:
        register: call ``register(experiment)`` once for each
            :class:`bedrot_lab.Experiment` (what ``@experiment`` returns).
            The core stamps each with the plugin that registered it.

    A name that two plugins register is usable from neither: commands that need
    it fail with one line naming both plugins and their files, and
    ``experiments list`` warns about it.

    Example::

        from bedrot_lab import experiment, hookimpl

        @experiment("hello", params={"who": "world"})
        def hello(ctx):
            \"\"\"Say hello.\"\"\"
            ctx.log_metric("greetings", 1)

        @hookimpl
        def register_experiments(register):
            register(hello)
    """


@hookspec
def register_datasets(register):
    """Contribute named data sets to the lake's catalog, read by ``ctx.load(name)``.

    Args:
        register: call ``register(dataset)`` for each :class:`bedrot_lab.Dataset`.

    Paths are relative to a zone folder and may be globs (the newest match by
    name is read). Column types: ``string``, ``int``, ``float``, ``bool``,
    ``date`` (YYYY-MM-DD), ``month`` (YYYY-MM), ``datetime``. A plugin's data
    set replaces a built-in one of the same name (the built-in catalog is
    ``trylast``).

    Example::

        from bedrot_lab import Dataset, hookimpl

        @hookimpl
        def register_datasets(register):
            register(Dataset("toolost_streams", "daily_streams_toolost.csv", zone="staging",
                             columns={"date": "date", "spotify_streams": "int"}))
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``bedrot-lab`` command line.

    Args:
        cli: a :class:`click.Group` to add to: decorate a function with
            ``@cli.command()`` (or ``@cli.group()`` for a group of subcommands), or
            call ``cli.add_command(command)``. Only the commands added to it are used.

    ``bedrot-lab --help`` lists plugin commands under their own heading, each with
    its plugin's name. A command gets what the built-in ones get: with
    ``@click.pass_obj``, an object whose ``lab`` is the :class:`bedrot_lab.Lab`
    (opened on first use). Raise :class:`bedrot_lab.UsageError` or
    ``click.ClickException`` for a mistake of the user's: one line, exit 1. Any
    other exception is reported in one line naming the command and the plugin;
    ``--debug`` shows its traceback.

    A command named like a built-in one, or like another plugin's, is refused
    with one line naming the plugin(s). A plugin whose ``register_commands``
    raises adds no command and is reported in one line; the other commands work.
    The hook is called when the command line needs to know the plugin commands
    (``--help``, or a command that is not built in), so keep it cheap: import
    heavy modules inside the command, not at the plugin's top level.

    Example::

        import click

        from bedrot_lab import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("name")
            @click.pass_obj
            def columns(state, name):
                \"\"\"Show the columns a catalog data set declares.\"\"\"
                for column, kind in state.lab.dataset(name).columns.items():
                    click.echo(f"{column}: {kind}")
    """


@hookspec
def experiment_from_file(path, settings):
    """Make a file an experiment: ``bedrot-lab run path/to/FILE`` and a spec's ``notebook =``
    or ``script =`` key run what a plugin returns for it.

    Args:
        path: the file, an absolute :class:`pathlib.Path` that exists.
        settings: the lake's :class:`bedrot_lab.Settings`.

    Return an :class:`bedrot_lab.Experiment` whose function runs the file (its ``params``
    are what ``-P`` may set; its ``name`` names the MLflow experiment), or None for a file
    the plugin does not run. The first plugin to return one wins. The built-in
    ``notebooks`` plugin runs notebooks (``.ipynb``, with papermill) and Python scripts
    (``.py``).

    Example::

        @hookimpl
        def experiment_from_file(path):
            if path.suffix == ".sql":
                return experiment(path.name, description=f"runs {path.name}")(
                    lambda ctx: ctx.log_table(ctx.sql(path.read_text()), path.stem))
    """


@hookspec
def validate_run(experiment, params, settings, lab):
    """Check a run before it is created: nothing exists in MLflow yet.

    Args:
        experiment: the :class:`bedrot_lab.Experiment` about to run.
        params: the validated parameters, a dict.
        settings: the lake's :class:`bedrot_lab.Settings`.
        lab: the :class:`bedrot_lab.Lab` (its plugins, its store).

    Return a list of reasons to refuse (a veto), or None / an empty list to
    allow. Every plugin is asked; any reason stops the run before it exists,
    and the command prints ``not starting the run: <reason>`` and exits 1.
    The built-in ``sandbox`` plugin refuses a run whose user or project is
    over a hard quota.

    Example::

        @hookimpl
        def validate_run(experiment):
            if experiment.name == "meta-ads" and not os.environ.get("META_ADS_EXPORT"):
                return ["meta-ads reads META_ADS_EXPORT; set it to the export's folder"]
    """


@hookspec
def run_tags(experiment, params, settings):
    """Return extra tags (a dict of str to str) for a run about to start.

    Args:
        experiment: the :class:`bedrot_lab.Experiment` being run.
        params: the validated parameters, a dict.
        settings: the lake's :class:`bedrot_lab.Settings`.

    Every plugin's dict is merged; a later plugin wins on a clash. Tags that
    look like credentials (by name or by value) are stored masked, and the run
    says so in its ``bedrot.internal.masked`` tag (see "Credentials never reach MLflow"
    in docs/plugins.md). The built-in ``run_tags`` adds the user, host, lake
    and git commit.

    Example::

        @hookimpl
        def run_tags(experiment, params):
            return {"team": "marketing"} if experiment.name.startswith("meta-") else {}
    """


@hookspec
def before_run(ctx):
    """Called once the MLflow run is open, before the experiment function.

    Args:
        ctx: the :class:`bedrot_lab.RunContext` of the run. A plugin may log to
            it. An exception here fails the run like one in the experiment.

    Example::

        @hookimpl
        def before_run(ctx):
            ctx.log.info("starting %s with %s", ctx.experiment.name, ctx.params)
    """


@hookspec
def after_run(ctx):
    """Called after the experiment function returned, before the run is closed FINISHED.

    Args:
        ctx: the run's context; whatever is logged here still belongs to the run.

    Example::

        @hookimpl
        def after_run(ctx):
            ctx.log_metric("inputs_read", len(ctx.inputs))
    """


@hookspec
def on_run_failure(ctx, error):
    """Called when an experiment (or a ``before_run``/``after_run`` hook) raised,
    Ctrl-C and SIGTERM included.

    Args:
        ctx: the run's context; the run is still open and will be closed FAILED
            (KILLED for Ctrl-C or SIGTERM).
        error: the exception.

    Example::

        @hookimpl
        def on_run_failure(ctx, error):
            (ctx.workdir / "FAILED.txt").write_text(f"{type(error).__name__}: {error}\\n")
    """


@hookspec
def on_run_end(ctx, status):
    """Called when a run ends, whatever its end, just before it is closed.

    Args:
        ctx: the run's context; metrics and tags logged here still belong to the run.
        status: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.

    The built-in ``sandbox`` plugin logs ``run.sandbox_bytes`` here.

    Example::

        @hookimpl
        def on_run_end(ctx, status):
            ctx.log_metric("outputs", len(ctx.outputs))
    """


@hookspec
def validate_promotion(name, version, curated_path, path, tags):
    """Check a registered version before it is promoted into the curated zone.

    Args:
        name: the registered model's name.
        version: the version number, a string.
        curated_path: where it would go, relative to 4_curated/.
        path: a local file with the version's bytes (already digest-checked).
        tags: the version's tags (format, schema, rows, sha256, plugin, experiment ...).

    Return a list of reasons to refuse (a veto), or None / an empty list to
    allow. Every plugin is asked; any reason stops the promotion, changes
    nothing, and is printed with the others.

    Example::

        @hookimpl
        def validate_promotion(curated_path, tags):
            if curated_path.startswith("finance/") and int(tags["rows"]) < 100:
                return [f"finance data sets need 100 rows or more, this one has {tags['rows']}"]
            return []
    """


@hookspec
def after_promotion(result, lab):
    """Called after a promotion or rollback changed the curated zone (for example, to notify).

    Args:
        result: the :class:`bedrot_lab.promotion.PromotionResult` (name, version,
            curated_path, status ``promote`` or ``rollback``, run_id, sha256, and
            what was replaced, with its archive path).
        lab: the :class:`bedrot_lab.Lab`.

    Exceptions propagate to the caller, after the promotion is complete.

    Example::

        @hookimpl
        def after_promotion(result):
            print(f"{result.curated_path} is now {result.name} v{result.version} from run {result.run_id}")
    """


@hookspec
def sandbox_rules(settings):
    """Contribute rules that the sandbox is checked against.

    Args:
        settings: the lake's :class:`bedrot_lab.Settings` (``settings.sandbox``
            is the raw ``[sandbox]`` table, if the rule wants its own keys).

    Return a list of rule objects (or None). A rule is any object with a
    ``name`` (str, unique) and ``evaluate(index, now)`` that yields
    :class:`bedrot_lab.Violation` objects whose ``rule`` is ``name`` or starts
    with ``name + "."``; ``index`` is the sandbox's usage index and ``now`` the
    time of the check (epoch seconds). Every plugin's rules are used, after
    the built-in ones (``quota``, ``stale``, ``secrets``); a rule named like a
    built-in one replaces it (in ``sandbox check``, ``sandbox clean`` and the
    run quota gate alike). A rule that raises is logged and skipped for that
    check, and its open violations stay open. A plugin whose ``sandbox_rules``
    raises, returns something that is not a rule, or names a rule like
    another plugin's is logged by name and its rules are left out of that
    check; open violations that no rule checked stay open.

    Example::

        from bedrot_lab import Violation, hookimpl

        class MaxFilesPerProject:
            name = "files"

            def evaluate(self, index, now):
                for row in index.usage(by="project"):
                    if row["files"] > 100_000:
                        yield Violation("files", f"project:{row['user']}/{row['project']}",
                                        row["files"], 100_000, "soft")

        @hookimpl
        def sandbox_rules(settings):
            return [MaxFilesPerProject()]
    """


@hookspec
def housekeeping_jobs(register):
    """Contribute jobs to the housekeeping daemon (``bedrot-lab daemon``).

    Args:
        register: call ``register(job)`` for each :class:`bedrot_lab.HousekeepingJob`:
            a name, a function ``run(ctx)`` that does one round and returns a one-line
            summary, a default schedule (``every="15m"`` or ``cron="0 3 * * *"``) and
            the options ``[daemon.jobs.NAME]`` may set. ``ctx`` is a
            :class:`bedrot_lab.JobContext`: ``ctx.lab``, ``ctx.options``, ``ctx.log``,
            and ``ctx.stopping`` to check between units of work.

    A job that raises is logged with its traceback, counted, and run again at its next
    time; it never stops the daemon or the other jobs. Two plugins registering one
    job name make that job unusable, as for experiments. The built-in ``sandbox``
    plugin registers ``watch``, ``reconcile``, ``check``, ``clean`` and ``report``;
    the built-in ``daemon`` plugin ``reap`` and ``gc``.

    Example::

        from bedrot_lab import HousekeepingJob, hookimpl

        def prune_exports(ctx):
            folder = ctx.lab.settings.zone("sandbox") / "exports"
            removed = 0
            for path in sorted(folder.glob("*.tmp")):
                if ctx.stopping:
                    break
                path.unlink()
                removed += 1
            return f"removed {removed} temporary exports"

        @hookimpl
        def housekeeping_jobs(register):
            register(HousekeepingJob("prune-exports", prune_exports, every="1h"))
    """


@hookspec
def handle_violation(transition, settings):
    """Called for each new, escalated or resolved sandbox violation (for example, to notify).

    Args:
        transition: a :class:`bedrot_lab.sandbox.violations.Transition`: ``kind``
            (``"new"``, ``"escalated"`` or ``"resolved"``), ``violation`` (rule,
            subject, measured, limit, severity, detail, path, line; never a
            secret's value), ``previous`` (what was last alerted, for
            ``escalated``), ``first_seen`` (since when it is open) and ``at``.
        settings: the lake's :class:`bedrot_lab.Settings`.

    A violation that persists is not handed over again: only changes are. The
    built-in sinks (``violation_sinks``) write the log and
    ``<state>/violations.jsonl``; turn them off with
    ``[plugins] disabled = ["violation_sinks"]``. With ``[daemon.alerts]
    webhook`` set, the built-in ``daemon`` plugin also POSTs each transition
    there as JSON (docs/sandbox.md, *Alerts*).

    Example::

        @hookimpl
        def handle_violation(transition):
            if transition.kind != "resolved" and transition.violation.severity == "hard":
                send_chat_message(transition.describe())
    """

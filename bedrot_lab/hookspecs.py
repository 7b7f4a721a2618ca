"""Every hook bedrot-lab calls; each docstring is that hook's reference."""

from __future__ import annotations

import pluggy

PROJECT = "bedrot_lab"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_experiments(register):
    """Contribute experiments.

    Args:
        register: call ``register(experiment)`` once for each
            :class:`bedrot_lab.Experiment` (what ``@experiment`` returns).
            The core remembers which plugin registered it. A name that two
            plugins register is usable from neither: what needs it fails
            with one line naming both plugins.

    An implementation that raises (or registers anything else) is reported by
    plugin name and contributes nothing; the other plugins' experiments stay.

    Example::

        @hookimpl
        def register_experiments(register):
            register(revenue_per_stream)
    """


@hookspec
def register_datasets(register):
    """Contribute named data sets to the lake's catalog, read by ``ctx.load(name)``.

    Args:
        register: call ``register(dataset)`` for each :class:`bedrot_lab.Dataset`.
            A later plugin may replace a built-in data set of the same name
            (the built-in catalog is registered ``trylast``).

    An implementation that raises is reported by plugin name and contributes nothing.
    """


@hookspec
def run_tags(experiment, params, settings):
    """Return extra tags (a dict of str to str) for a run about to start.

    Args:
        experiment: the :class:`bedrot_lab.Experiment` being run.
        params: the validated parameters, a dict.
        settings: the lake's :class:`bedrot_lab.config.Settings`.

    Every plugin's dict is merged; a later plugin wins on a clash. Tags that
    look like credentials are masked before they reach MLflow. An implementation
    that raises is logged by plugin name and its tags are left out.
    """


@hookspec
def before_run(ctx):
    """Called once the MLflow run is open, before the experiment function.

    Args:
        ctx: the :class:`bedrot_lab.context.RunContext` of the run. A plugin may
            log to it. An exception here fails the run like one in the experiment.
    """


@hookspec
def after_run(ctx):
    """Called after the experiment function returned, before the run is closed FINISHED.

    Args:
        ctx: the run's context; whatever is logged here still belongs to the run.
    """


@hookspec
def on_run_failure(ctx, error):
    """Called when an experiment (or a ``before_run``/``after_run`` hook) raised.

    Args:
        ctx: the run's context; the run is still open and will be closed FAILED
            (KILLED for Ctrl-C or SIGTERM).
        error: the exception. Exceptions raised by this hook are logged by plugin
            name, not raised, and the other implementations still run.
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

    Return a list of reasons to refuse (a veto), or None / an empty list to allow.
    Every plugin is asked; any reason stops the promotion and is printed.
    """


@hookspec
def after_promotion(result, lab):
    """Called after a promotion or rollback changed the curated zone (for example, to notify).

    Args:
        result: the :class:`bedrot_lab.promotion.PromotionResult` (name, version,
            curated_path, status, run_id, sha256, replaced).
        lab: the :class:`bedrot_lab.lab.Lab`. Exceptions propagate to the caller,
            after the promotion is complete.
    """


@hookspec
def sandbox_rules(settings):
    """Contribute rules that the sandbox is checked against.

    Args:
        settings: the lake's :class:`bedrot_lab.config.Settings` (``settings.sandbox``
            is the raw ``[sandbox]`` table, if the rule wants its own keys).

    Return a list of rule objects (or None). A rule is any object with a ``name``
    (str, unique) and ``evaluate(index, now)`` that yields
    :class:`bedrot_lab.sandbox.rules.Violation` objects whose ``rule`` is ``name``
    or starts with ``name + "."``; ``index`` is the
    :class:`bedrot_lab.sandbox.index.UsageIndex` and ``now`` the time of the check
    (epoch seconds). Every plugin's rules are used, after the built-in ones
    (``quota``, ``stale``, ``secrets``); a rule named like a built-in one replaces
    it; two plugins returning the same name is an error. A rule that raises is
    logged and skipped for that check, and its open violations stay open. A
    plugin whose ``sandbox_rules`` raises is logged by name and its rules are
    left out of that check; open violations that no rule checked stay open.
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
        settings: the lake's :class:`bedrot_lab.config.Settings`.

    A violation that persists is not handed over again: only changes are.
    Every plugin is called; an exception is logged and the other
    implementations still run. The built-in sinks (``violation_sinks``, trylast)
    write the log and ``<state>/violations.jsonl``; disable them with
    ``[plugins] disabled = ["violation_sinks"]``.
    """

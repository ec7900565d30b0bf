"""pytest hooks: options, one item per registered model, the marker and fixture, the summary.

Loading this module imports neither torch nor the engine: they are imported when
``--netbudget`` is given or the ``netbudget`` fixture is used. The run's state lives
in :mod:`pytest_netbudget.session`; items and checks hand it one ``Result`` each
through :func:`submit`, and the result rides on the test report
(``report.netbudget``), so under pytest-xdist the controller sees every model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from . import budgets, config, reports
from .loading import stops_the_run
from .markdown_text import visible_controls
from .session import NetbudgetSession, Options, conflicting_name

SESSION = pytest.StashKey[NetbudgetSession]()
RESULTS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netbudget", "model budgets (pytest-netbudget)")
    group.addoption(
        "--netbudget",
        action="store_true",
        default=False,
        help="profile every model registered in [tool.netbudget] of pyproject.toml and enforce its budget",
    )
    group.addoption(
        "--netbudget-update", action="store_true", default=False, help="write this run's figures to the baseline file"
    )
    group.addoption(
        "--netbudget-report",
        action="append",
        default=[],
        metavar="PATH",
        help="write a Markdown (.md), JSON (.json) or self-contained HTML (.html) report; may be given more than once",
    )
    group.addoption(
        "--netbudget-base",
        default=None,
        metavar="REF",
        help="show the change against the baseline file as of git revision REF (e.g. origin/main); "
        "budgets and max_increase still judge against the checked-out baseline",
    )
    group.addoption(
        "--netbudget-compare",
        default=None,
        metavar="PATH",
        help="show the change against this JSON report (e.g. the base branch's CI artifact)",
    )
    group.addoption(
        "--netbudget-check-baseline",
        action="store_true",
        default=False,
        help="fail the run when the baseline file does not match it (missing, obsolete or changed entries)",
    )
    group.addoption(
        "--netbudget-device",
        default=None,
        metavar="DEV",
        help="profile every model on DEV (auto, cpu, cuda, cuda:N, meta)",
    )
    group.addoption(
        "--netbudget-layers",
        nargs="?",
        type=int,
        const=-1,
        default=None,
        metavar="DEPTH",
        help="print each model's per-layer table, optionally down to DEPTH",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netbudget(**limits): budgets (max_params=..., max_macs=...) for the netbudget fixture's check()"
    )
    session = NetbudgetSession(
        Options.from_pytest(config), _pyproject(config), is_worker=hasattr(config, "workerinput")
    )
    config.stash[SESSION] = session
    config.pluginmanager.register(SessionHooks(session), "netbudget-session")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The marker's limits apply to ``netbudget.check()``: a marked test without the fixture
    would pass without checking anything, so it is an error that says so."""
    if item.get_closest_marker("netbudget") is not None and "netbudget" not in getattr(item, "fixturenames", ()):
        pytest.fail(
            f"{item.nodeid} is marked netbudget (@pytest.mark.netbudget or @budget) but does not use the "
            "netbudget fixture, so nothing is checked: add a `netbudget` argument and call "
            "netbudget.check(model, input_shape=...)",
            pytrace=False,
        )


def _pyproject(pytest_config: pytest.Config) -> Path:
    inipath = pytest_config.inipath
    if inipath is not None and inipath.name == "pyproject.toml":
        return inipath
    return pytest_config.rootpath / "pyproject.toml"


def _session(pytest_config: pytest.Config) -> NetbudgetSession:
    return pytest_config.stash[SESSION]


def submit(item: pytest.Item, result: budgets.Result) -> budgets.Verdict:
    """The one path of every measured model: keep the result on its test item (it rides on the
    report to the controller), attach its figures as JUnit properties, judge it, and fail the
    test when it fails."""
    item.stash.setdefault(RESULTS, []).append(result)
    if result.profile is not None:
        for metric, figure in result.profile.totals.items():
            if figure is not None:
                item.user_properties.append((f"netbudget_{metric}", figure))
    session = _session(item.config)
    verdict = session.judge(result)
    if not verdict.passed:
        pytest.fail(visible_controls(reports.failure_text(verdict, session.baseline_file)), pytrace=False)
    return verdict


class SessionHooks:
    """The hooks that need this run's session: collection, results, the summary."""

    def __init__(self, session: NetbudgetSession) -> None:
        self.session = session
        self.model_nodeids: dict[str, str] = {}  # a selected model's node id -> its name
        # Under pytest-xdist, on the controller: the tests that check models (the workers say which at
        # the end), and the tests whose worker died while running them, with why.
        self.check_nodeids: set[str] = set()
        self.crashed: dict[str, str] = {}

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> ModelsFile | None:
        """pyproject.toml met during collection, or named on the command line
        (``pytest --netbudget pyproject.toml::mnist_cnn``), collects the models."""
        settings = self.session.settings
        if self.session.models and settings is not None and file_path == settings.path:
            return ModelsFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list) -> None:
        """The models come first, also when the collected paths (``testpaths``) do not include pyproject.toml.

        Paths on the command line select as pytest's own do: ``pytest --netbudget tests/test_x.py``
        runs what that file holds, and the models run when pyproject.toml (or its directory) is named.
        """
        settings = self.session.settings
        if settings is None or not self.session.models or any(isinstance(item, ModelItem) for item in items):
            return
        if getattr(config, "args_source", None) == pytest.Config.ArgsSource.ARGS:
            return
        node = ModelsFile.from_parent(session, path=settings.path)
        models: list[pytest.Item | pytest.Collector] = list(node.collect())
        # Report them as collected, so that "collected N items" and --collect-only count them.
        config.hook.pytest_collectreport(report=pytest.CollectReport(node.nodeid, "passed", None, models))
        items[:0] = models

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.expect({item.nodeid: item.name for item in session.items if isinstance(item, ModelItem)})
        output = getattr(session.config, "workeroutput", None)
        if output is not None:  # a pytest-xdist worker: which tests check models, for the controller
            output["netbudget_checks"] = [item.nodeid for item in session.items if _checks_models(item)]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A pytest-xdist worker finished: every worker collected every test, so any one that
        finishes names the tests that check models, also those of a worker that died."""
        self.check_nodeids.update(getattr(node, "workeroutput", {}).get("netbudget_checks", []))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under pytest-xdist the controller collects nothing: the workers' node ids say which
        registered models run, so that one whose worker dies still gets its result."""
        prefix = f"{self.models_file_nodeid(node.config)}::"
        self.expect({nodeid: nodeid[len(prefix) :] for nodeid in ids if nodeid.startswith(prefix)})

    def expect(self, models: dict[str, str]) -> None:
        """The selected models, by node id: the session gives each one a result in the end."""
        self.model_nodeids.update(models)
        self.session.expect(models.values())

    def models_file_nodeid(self, pytest_config: pytest.Config) -> str:
        """pyproject.toml's node id, as pytest names a file: its path from the rootdir."""
        path = self.session.settings.path if self.session.settings else self.session.pyproject
        try:
            return path.relative_to(pytest_config.rootpath).as_posix()
        except ValueError:
            return path.as_posix()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        outcome = yield
        report = outcome.get_result()
        results = item.stash.get(RESULTS, None)
        if report.when == "call" and results:
            report.netbudget = [result.to_dict() for result in results]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and getattr(report, "netbudget", None):
            for data in report.netbudget:
                self.session.collect(budgets.Result.from_dict(data))
        elif (report.failed or report.skipped) and report.nodeid in self.model_nodeids:
            # No result came with it: a failed setup, a crashed pytest-xdist worker ("???").
            self.session.no_result(self.model_nodeids[report.nodeid], _why(report))
        elif report.failed and report.when == "???":  # pytest-xdist's report of a test whose worker died
            self.crashed[report.nodeid] = _why(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        for nodeid, why in self.crashed.items():
            if nodeid in self.check_nodeids:
                self.session.checks_without_results(nodeid, why)
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")

        def say(text: str) -> None:  # now, not with the notes at the end: the run is waiting
            if terminal is not None:
                terminal.write_line(visible_controls(f"netbudget: {text}"))

        if not self.session.finish(interrupted, say) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.session.usage_error:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            # pytest prints no terminal summary after an internal error: say it here.
            self.print_notes(session.config.pluginmanager.get_plugin("terminalreporter"))

    def print_notes(self, terminalreporter: Any) -> None:
        """What was written where, and what could not be."""
        if terminalreporter is None:
            return
        for note in self.session.notes:
            terminalreporter.write_line(visible_controls(f"netbudget: {note}"), red=note.startswith("ERROR"))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        session = self.session
        if session.is_worker:
            return
        if not session.verdicts:
            self.print_notes(terminalreporter)
            return
        # -q: only when something failed; default: one line per model; -v: every metric.
        verbosity = terminalreporter.config.get_verbosity()
        if verbosity >= 0 or not all(verdict.passed for verdict in session.verdicts):
            terminalreporter.write_sep("=", "netbudget summary")
            for line in reports.summary_lines(session.verdicts, session.removed_models(), full=verbosity > 0):
                terminalreporter.write_line(visible_controls(line))
        depth = session.options.layers
        if depth is not None:
            for verdict in session.verdicts:
                if verdict.profile is not None:
                    terminalreporter.write_sep("-", visible_controls(f"{verdict.name}: layers"))
                    terminalreporter.write_line(visible_controls(verdict.profile.table(None if depth < 0 else depth)))
        self.print_notes(terminalreporter)


def _checks_models(item: pytest.Item) -> bool:
    """Whether a test checks models: it takes the netbudget fixture."""
    return "netbudget" in getattr(item, "fixturenames", ())


def _why(report: pytest.TestReport) -> str:
    """Why a test report came without a result, in one line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = crash.message
    elif isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        text = str(report.longrepr[2])
    else:
        text = str(report.longrepr)
    text = text.strip().splitlines()[0] if text.strip() else "no details"
    if report.skipped:
        return f"skipped ({text})"
    return f"its {report.when} failed: {text}" if report.when in ("setup", "teardown") else text


# --- items -------------------------------------------------------------------------------------------


class ModelsFile(pytest.File):
    """The pyproject.toml that registers models; one item per ``[tool.netbudget.models.NAME]``."""

    def collect(self) -> list[pytest.Item]:
        return [ModelItem.from_parent(self, name=spec.name, spec=spec) for spec in _session(self.config).models]


class ModelItem(pytest.Item):
    """Profiles one registered model and fails when it is over budget or grew too much."""

    def __init__(self, *, spec: config.ModelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        from .runner import run_spec

        submit(self, run_spec(self.spec, _session(self.config).options.device))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """A model's failure is its budget table, and its FAILED line the table's first line."""
        if isinstance(excinfo.value, pytest.fail.Exception):
            return excinfo.value.msg
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"netbudget model {self.name}"


# --- the fixture -----------------------------------------------------------------------------------


class BudgetChecker:
    """The ``netbudget`` fixture: profile or check models built inside a test."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._item = request.node
        self._session = _session(request.config)
        marker = request.node.get_closest_marker("netbudget")
        self._marker_limits = dict(marker.kwargs) if marker else {}
        self._checks = 0

    def profile(
        self,
        model: Any,
        inputs: Any = None,
        *,
        input_shape: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        train: Any = None,
        serve: Any = None,
        target: Any = None,
    ) -> Any:
        """Profile ``model`` (see ``pytest_netbudget.profile``); ``--netbudget-device`` applies,
        and the formulas of ``[tool.netbudget] formulas`` count. ``train`` and ``serve``: a training
        or serving step too, as ``check()`` takes them. ``target``: the accelerator its latency is
        estimated on (a name, the project's own targets included, or a ``targets.Target``);
        ``[tool.netbudget] target`` by default, as for a registered model."""
        from .engine import profile

        self._session.load_formulas()

        chosen = device or self._session.default_device
        where = config.Place("netbudget.profile():")
        step = config.train_step(train, where) if train not in (None, False) else None
        served = config.serve_step(serve, where) if serve is not None else None
        return profile(
            model,
            inputs,
            input_shape=input_shape,
            device=chosen,
            dtype=dtype,
            train=step or False,
            serve=served,
            target=self._target(target, where),
        )

    def _target(self, target: Any, where: config.Place) -> Any:
        """``target`` as a ``targets.Target``: looked up among the built-in and the project's own, or
        the project's ``target`` when none is given."""
        own, default = self._session.project_targets()
        table = {"target": target} if target is not None else {}
        return config.parse_check(table, where, target=default, own_targets=own).target

    def check(
        self,
        model: Any,
        inputs: Any = None,
        *,
        input_shape: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        name: str | None = None,
        train: Any = None,
        serve: Any = None,
        target: Any = None,
        **limits: Any,
    ) -> Any:
        """Profile ``model`` and fail the test when it exceeds the marker's limits (keyword limits override),
        or, with a baseline entry, grew past ``max_increase``; ``strict=True`` fails on uncounted ops.
        ``max_increase`` and ``strict`` default to ``[tool.netbudget]``'s, as for a registered model.
        ``train`` (here or in the marker) profiles a training step too, as a registered model's
        ``train`` does: ``True``, the same table (``{"optimizer": "sgd", "batch": 8}``) or a ``StepSpec``;
        ``max_train_*`` limits need it. ``serve`` likewise profiles a serving step (a table such as
        ``{"context": 2048, "batch": 4}`` or a ``ServeSpec``), which the serving budgets need.
        ``target`` (here or in the marker; ``[tool.netbudget] target`` by default) is the accelerator
        the latency is estimated on, which ``max_latency_ms`` needs.

        The check is named after its test's node id (``tests/test_x.py::test_fits[cpu]``, then
        ``...[2]`` for a second check), or ``name``. Whatever goes wrong, it has one result: a
        bad limit, a taken name or a failing profile is that result's error.
        """
        from .runner import check_error_text

        nodeid = self._item.nodeid
        self._checks += 1
        label = name or (nodeid if self._checks == 1 else f"{nodeid}[{self._checks}]")
        result = budgets.Result(name=label, origin=nodeid)
        # submit() fails the test when the result is an error, so each error below ends the check;
        # it is called outside the except blocks, so no "During handling of ..." chain is shown.
        problem = self._session.claim(label, nodeid)
        if problem:
            submit(self._item, replace(result, name=conflicting_name(result), error=problem))
        settings = self._session.settings
        table = {**self._marker_limits, **limits}
        if train is not None:
            table["train"] = train
        if serve is not None:
            table["serve"] = serve
        if target is not None:
            table["target"] = target
        try:
            own_targets, default_target = self._session.project_targets()
            rules = config.parse_check(
                table,
                config.Place(f"{nodeid}: netbudget limits"),
                settings.max_increase if settings else None,
                settings.strict if settings else False,
                default_target,
                own_targets,
            )
        except config.ConfigError as error:
            problem = str(error)
        if problem:
            submit(self._item, replace(result, error=problem))
        result = replace(result, limits=rules.limits, max_increase=rules.max_increase, strict=rules.strict)
        chosen = device or self._session.default_device
        try:
            measured = self.profile(
                model,
                inputs,
                input_shape=input_shape,
                device=chosen,
                dtype=dtype,
                train=rules.train,
                serve=rules.serve,
                target=rules.target,
            )
        except BaseException as error:
            if stops_the_run(error):
                raise
            problem = check_error_text(error, chosen)
        if problem:
            submit(self._item, replace(result, error=problem))
        submit(self._item, replace(result, profile=measured))
        return measured


@pytest.fixture
def netbudget(request: pytest.FixtureRequest) -> BudgetChecker:
    """Profile and budget-check models from a test: ``netbudget.check(model, input_shape=...)``."""
    return BudgetChecker(request)

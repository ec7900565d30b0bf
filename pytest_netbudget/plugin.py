"""pytest hooks: options, one item per registered model, the marker and fixture, the summary.

Loading this module imports neither torch nor the engine: they are imported when
``--netbudget`` is given or the ``netbudget`` fixture is used. Items record what
they measured on their report (``report.netbudget``), so under pytest-xdist the
controller sees every model and alone prints the summary and writes files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from . import baseline, budgets, config, reports

REPORT_SUFFIXES = (".md", ".json")


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
        help="write a Markdown (.md) or JSON (.json) report; may be given twice",
    )
    group.addoption(
        "--netbudget-compare",
        default=None,
        metavar="PATH",
        help="compare with this JSON report (e.g. the base branch's) instead of the baseline file",
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
    config.pluginmanager.register(NetbudgetSession(config), "netbudget-session")


def _pyproject(pytest_config: pytest.Config) -> Path:
    inipath = pytest_config.inipath
    if inipath is not None and inipath.name == "pyproject.toml":
        return inipath
    return pytest_config.rootpath / "pyproject.toml"


class BudgetFailure(Exception):
    """A model over budget, grown too much, or not profiled; the message is the whole story."""


class NetbudgetSession:
    """Holds the configuration, the baseline and the results of one pytest session."""

    def __init__(self, pytest_config: pytest.Config) -> None:
        self.config = pytest_config
        self.enabled: bool = pytest_config.getoption("netbudget")
        self.update: bool = pytest_config.getoption("netbudget_update")
        self.device_override: str | None = pytest_config.getoption("netbudget_device")
        self.is_worker = hasattr(pytest_config, "workerinput")
        self.settings: config.Settings | None = None
        self.baseline: dict[str, dict[str, Any]] = {}
        self.results: list[reports.ModelResult] = []
        self.notes: list[str] = []
        self.write_failed = False
        if self.enabled or self.update or pytest_config.getoption("netbudget_report"):
            self._load()

    def _load(self) -> None:
        pyproject = _pyproject(self.config)
        for path in self.config.getoption("netbudget_report"):
            if Path(path).suffix not in REPORT_SUFFIXES:
                raise pytest.UsageError(f"--netbudget-report={path}: the file must end in .md or .json")
        if self.device_override and not config.is_device(self.device_override):
            raise pytest.UsageError(
                f"--netbudget-device: unknown device {self.device_override!r}; use one of {', '.join(config.DEVICES)}"
            )
        try:
            self.settings = config.load_settings(pyproject) if pyproject.exists() else None
            if self.settings is not None and self._wants_cuda():
                import torch

                config.check_cuda(self.settings, torch.cuda.is_available(), self.device_override)
        except config.ConfigError as error:
            raise pytest.UsageError(str(error)) from None
        root = str(pyproject.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        self.baseline = self._load_baseline()

    def _wants_cuda(self) -> bool:
        devices = [self.device_override] if self.device_override else [spec.device for spec in self.settings.models]
        return any(device.startswith("cuda") for device in devices)

    def _load_baseline(self) -> dict[str, dict[str, Any]]:
        compare = self.config.getoption("netbudget_compare")
        if compare:
            path = Path(compare)
            if not path.exists():
                raise pytest.UsageError(f"--netbudget-compare={compare}: no such file")
        elif self.settings is not None:
            path = self.settings.baseline
        else:
            return {}
        try:
            return baseline.load(path)
        except baseline.BaselineError as error:
            if self.update and not compare:
                self.notes.append(f"the old baseline could not be read and will be replaced: {error}")
                return {}
            raise pytest.UsageError(str(error)) from None

    # --- collection ------------------------------------------------------------------------

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> ModelsFile | None:
        """pyproject.toml met during collection, or named on the command line
        (``pytest --netbudget pyproject.toml::mnist_cnn``), collects the models."""
        if self.enabled and self.settings is not None and file_path == self.settings.path:
            return ModelsFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list) -> None:
        """The models come first, also when the collected paths (``testpaths``) do not include pyproject.toml."""
        if not self.enabled or self.settings is None or not self.settings.models:
            return
        if any(isinstance(item, ModelItem) for item in items):
            return
        node = ModelsFile.from_parent(session, path=self.settings.path)
        models = list(node.collect())
        # Report them as collected, so that "collected N items" and --collect-only count them.
        config.hook.pytest_collectreport(report=pytest.CollectReport(node.nodeid, "passed", None, models))
        items[:0] = models

    # --- results travel on reports (also from pytest-xdist workers) -------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        outcome = yield
        report = outcome.get_result()
        records = getattr(item, "netbudget_records", None)
        if report.when == "call" and records:
            report.netbudget = records

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and getattr(report, "netbudget", None) and not self.is_worker:
            self.results.extend(self.judge(record) for record in report.netbudget)

    def judge(self, record: dict[str, Any]) -> reports.ModelResult:
        """A measured record and its limits -> verdict and layer diff against the baseline."""
        result = reports.ModelResult(
            name=record["name"], origin=record["origin"], profile=record["profile"], error=record["error"]
        )
        if record["profile"] is None:
            return result
        previous = self.baseline.get(record["name"])
        current = baseline.entry_from_profile(record["profile"], record["origin"])
        # An update run accepts growth: its figures become the new baseline (budgets still apply).
        increase = {} if self.update else {m: config.Increase(**value) for m, value in record["max_increase"].items()}
        result.verdict = budgets.evaluate(
            record["name"],
            current["totals"],
            record["limits"],
            baseline=previous["totals"] if previous else None,
            max_increase=increase,
            strict=record["strict"],
            uncounted_ops=record["profile"]["uncounted_ops"],
        )
        if previous is not None:
            result.compared = True
            result.layer_changes = baseline.layer_diff(previous, current)
        return result

    def record(
        self,
        name: str,
        origin: str,
        profile: Any,
        error: str | None,
        limits: dict[str, float],
        max_increase: dict[str, config.Increase],
        strict: bool,
    ) -> dict[str, Any]:
        """What an item sends to the controller: plain, JSON-ready data."""
        return {
            "name": name,
            "origin": origin,
            "error": error,
            "limits": limits,
            "strict": strict,
            "profile": profile.to_dict() if profile is not None else None,
            "max_increase": {
                metric: {"fraction": rule.fraction, "amount": rule.amount} for metric, rule in max_increase.items()
            },
        }

    # --- end of session ----------------------------------------------------------------------

    def _registered_names(self) -> set[str]:
        return {spec.name for spec in self.settings.models} if self.settings else set()

    def removed_models(self) -> list[str]:
        """Registered models that have a baseline entry but are no longer in pyproject.toml.

        Checks from tests are never called removed: a run may simply not have selected them.
        """
        present = self._registered_names() | {result.name for result in self.results}
        return sorted(
            name
            for name, entry in self.baseline.items()
            if name not in present and entry.get("origin", "pyproject.toml") == "pyproject.toml"
        )

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker or not self.results:
            return
        self.results.sort(key=lambda result: (result.origin != "pyproject.toml", result.name))
        removed = self.removed_models()
        for path in self.config.getoption("netbudget_report"):
            self._write_report(Path(path), removed)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            try:
                with open(step_summary, "a", encoding="utf-8") as stream:
                    stream.write(reports.markdown(self.results, removed) + "\n")
            except OSError as error:
                self.notes.append(f"could not append to GITHUB_STEP_SUMMARY ({step_summary}): {error.strerror}")
        if self.update:
            self._write_baseline()
        if self.write_failed and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_report(self, path: Path, removed: list[str]) -> None:
        text = (
            reports.markdown(self.results, removed) if path.suffix == ".md" else reports.to_json(self.results, removed)
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            baseline.write_atomic(path, text)
            self.notes.append(f"report written to {path}")
        except (OSError, baseline.BaselineError) as error:
            self.notes.append(f"ERROR: could not write the report {path}: {error}")
            self.write_failed = True

    def _write_baseline(self) -> None:
        target = self.settings.baseline if self.settings else Path(self.config.rootpath, config.DEFAULT_BASELINE)
        fresh = {
            result.name: baseline.entry_from_profile(result.profile, result.origin)
            for result in self.results
            if result.profile
        }
        try:
            previous = baseline.load(target)
        except baseline.BaselineError:
            previous = {}
        removed = set(self.removed_models())
        kept = {name: entry for name, entry in previous.items() if name not in removed}
        try:
            baseline.update(target, fresh, kept)
            self.notes.append(f"baseline updated: {target} ({len(fresh)} model(s) written)")
        except baseline.BaselineError as error:
            self.notes.append(f"ERROR: {error}")
            self.write_failed = True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        if self.enabled and self.settings is None and not self.results:
            terminalreporter.write_sep("=", "netbudget")
            terminalreporter.write_line(f"no [tool.netbudget] table in {_pyproject(self.config)}: no models registered")
            return
        if not self.results:
            return
        terminalreporter.write_sep("=", "netbudget summary")
        for line in reports.summary_lines(self.results, self.removed_models()):
            terminalreporter.write_line(line)
        depth = self.config.getoption("netbudget_layers")
        if depth is not None:
            from .engine import Profile

            for result in self.results:
                if result.profile is not None:
                    terminalreporter.write_sep("-", f"{result.name}: layers")
                    terminalreporter.write_line(Profile.from_dict(result.profile).table(None if depth < 0 else depth))
        for note in self.notes:
            terminalreporter.write_line(f"netbudget: {note}", red=note.startswith("ERROR"))


class ModelsFile(pytest.File):
    """The pyproject.toml that registers models; one item per ``[tool.netbudget.models.NAME]``."""

    def collect(self) -> list[pytest.Item]:
        session: NetbudgetSession = self.config.pluginmanager.get_plugin("netbudget-session")
        return [ModelItem.from_parent(self, name=spec.name, spec=spec) for spec in session.settings.models]


class ModelItem(pytest.Item):
    """Profiles one registered model and fails when it is over budget or grew too much."""

    def __init__(self, *, spec: config.ModelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.netbudget_records: list[dict[str, Any]] = []

    def runtest(self) -> None:
        from .specs import ModelError, profile_spec

        session: NetbudgetSession = self.config.pluginmanager.get_plugin("netbudget-session")
        profile, error = None, None
        try:
            profile = profile_spec(self.spec, session.device_override)
        except ModelError as failure:
            error = str(failure)
        record = session.record(
            self.spec.name, "pyproject.toml", profile, error, self.spec.limits, self.spec.max_increase, self.spec.strict
        )
        self.netbudget_records.append(record)
        if profile is not None:
            for metric, figure in profile.totals().items():
                if figure is not None:
                    self.user_properties.append((f"netbudget_{metric}", figure))
        result = session.judge(record)
        if result.status != "pass":
            raise BudgetFailure(reports.failure_text(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, BudgetFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"netbudget model {self.name}"


class BudgetChecker:
    """The ``netbudget`` fixture: profile or check models built inside a test."""

    def __init__(self, request: pytest.FixtureRequest, session: NetbudgetSession) -> None:
        self._node = request.node
        self._session = session
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
    ) -> Any:
        """Profile ``model`` (see ``pytest_netbudget.profile``); ``--netbudget-device`` applies."""
        from .engine import profile

        chosen = (
            device
            or self._session.device_override
            or (self._session.settings.device if self._session.settings else "auto")
        )
        return profile(model, inputs, input_shape=input_shape, device=chosen, dtype=dtype)

    def check(
        self,
        model: Any,
        inputs: Any = None,
        *,
        input_shape: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        name: str | None = None,
        **limits: Any,
    ) -> Any:
        """Profile ``model`` and fail the test when it exceeds the marker's limits (keyword limits override)."""
        try:
            parsed = config.parse_limits({**self._marker_limits, **limits})
        except config.ConfigError as error:
            pytest.fail(
                str(error).replace("netbudget: [limits]", f"{self._node.nodeid}: netbudget limits"), pytrace=False
            )
        result_profile = self.profile(model, inputs, input_shape=input_shape, device=device, dtype=dtype)
        self._checks += 1
        label = name or (self._node.name if self._checks == 1 else f"{self._node.name}[{self._checks}]")
        record = self._session.record(label, self._node.nodeid, result_profile, None, parsed, {}, False)
        records = self._node.__dict__.setdefault("netbudget_records", [])
        records.append(record)
        result = self._session.judge(record)
        if result.status != "pass":
            pytest.fail(reports.failure_text(result), pytrace=False)
        return result_profile


@pytest.fixture
def netbudget(request: pytest.FixtureRequest) -> BudgetChecker:
    """Profile and budget-check models from a test: ``netbudget.check(model, input_shape=...)``."""
    return BudgetChecker(request, request.config.pluginmanager.get_plugin("netbudget-session"))

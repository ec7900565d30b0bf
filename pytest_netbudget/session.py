"""One pytest run's netbudget state: configuration, baseline, verdicts, and what gets written.

The plugin's hooks hand everything here; this module holds no hooks itself (as
pytest-benchmark splits ``plugin.py`` from its ``BenchmarkSession``). Under
pytest-xdist every process has a session: workers judge their own items so that
a failing item fails, and only the controller collects every result, prints the
summary and writes the reports and the baseline.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import baseline, budgets, config, devices, files, loading, reports
from .html_report import html_report
from .results import ORIGIN_PYPROJECT, BaselineEntry
from .targets import Target

#: What each file suffix of --netbudget-report writes.
REPORT_WRITERS = {".md": reports.markdown, ".json": reports.to_json, ".html": html_report}


@dataclass(frozen=True)
class Options:
    """The command-line options that shape a run."""

    enabled: bool = False
    update: bool = False
    reports: tuple[str, ...] = ()
    compare: str | None = None
    base: str | None = None
    check_baseline: bool = False
    device: str | None = None
    layers: int | None = None

    @classmethod
    def from_pytest(cls, pytest_config: pytest.Config) -> Options:
        return cls(
            enabled=pytest_config.getoption("netbudget"),
            update=pytest_config.getoption("netbudget_update"),
            reports=tuple(pytest_config.getoption("netbudget_report")),
            compare=pytest_config.getoption("netbudget_compare"),
            base=pytest_config.getoption("netbudget_base"),
            check_baseline=pytest_config.getoption("netbudget_check_baseline"),
            device=pytest_config.getoption("netbudget_device"),
            layers=pytest_config.getoption("netbudget_layers"),
        )

    @property
    def active(self) -> bool:
        """Anything asked of netbudget on the command line."""
        return self.enabled or self.update or bool(self.reports)


class NetbudgetSession:
    """Holds the configuration, the baseline and the verdicts of one pytest session."""

    def __init__(self, options: Options, pyproject: Path, is_worker: bool = False) -> None:
        self.options = options
        self.pyproject = pyproject
        self.is_worker = is_worker
        self.settings: config.Settings | None = None
        self.baseline: dict[str, BaselineEntry] = {}
        # What the "change" column compares with when it is not the baseline (None: the baseline).
        self.reference: dict[str, BaselineEntry] | None = None
        self.compared_with = "no baseline"
        self.verdicts: list[budgets.Verdict] = []
        self.notes: list[str] = []
        # A file could not be written, a result was refused, or --netbudget-check-baseline found
        # the baseline out of date: the run fails; with a usage error (exit code 4) when the command
        # asked for what netbudget refuses to do (a partial update over an unreadable baseline).
        self.failed = False
        self.usage_error = False
        self._claimed: dict[str, str] = {}  # a check's name -> the node id of the test that owns it
        # The registered models this run selected, and why one has no result (when it is known).
        self._expected: set[str] = set()
        self._no_result: dict[str, str] = {}
        self._formulas_loaded = False
        self._targets: tuple[dict[str, Target], Target | None] | None = None
        self._stale: list[str] = []  # how the committed baseline does not match this run
        if options.active:
            self._load()

    # --- start ---------------------------------------------------------------------------------

    def _load(self) -> None:
        for path in self.options.reports:
            if Path(path).suffix not in REPORT_WRITERS:
                raise pytest.UsageError(f"--netbudget-report={path}: the file must end in .md, .json or .html")
        if self.options.base is not None and not self.options.base.strip():
            # an unset CI variable: comparing with nothing would pass silently
            raise pytest.UsageError(
                "--netbudget-base is empty: give a git revision such as origin/main "
                "(in CI, check that the variable holding the base branch is set)"
            )
        if self.options.base and self.options.compare:
            raise pytest.UsageError("--netbudget-base and --netbudget-compare both name what to compare with; give one")
        if self.options.check_baseline and self.options.update:
            raise pytest.UsageError(
                "--netbudget-check-baseline checks the baseline file that --netbudget-update would rewrite; give one"
            )
        try:
            if self.options.device:
                devices.check_device(self.options.device, "--netbudget-device")
            self.settings = config.load_settings(self.pyproject) if self.pyproject.exists() else None
            if self.settings is not None and self._wants_cuda():
                import torch

                config.check_cuda(self.settings, torch.cuda.is_available(), self.options.device)
        except (config.ConfigError, devices.ChoiceError) as error:
            raise pytest.UsageError(str(error)) from None
        if self.options.enabled and self.settings is None:
            # Profiling nothing and passing would let a misconfigured CI job pass every time.
            found = "has no [tool.netbudget] table" if self.pyproject.exists() else "does not exist"
            raise pytest.UsageError(
                f"--netbudget: {self.pyproject} {found}; netbudget reads the pyproject.toml of pytest's rootdir "
                "(or the one given with -c): register models in its [tool.netbudget.models.NAME] tables"
            )
        self._importable_root()  # factories are "module:callable" paths from pyproject.toml's folder
        try:
            self.load_formulas()
        except (config.ConfigError, loading.LoadError) as error:
            raise pytest.UsageError(str(error)) from None
        self.baseline = self._load_baseline()
        self.reference = self._load_reference()

    def load_formulas(self) -> None:
        """Import the modules of ``[tool.netbudget] formulas`` once, with pyproject.toml's folder
        importable: at the start of a run that reads the configuration (every worker's too), else
        before the first check from a test (a plain ``pytest`` run reads only this key then)."""
        if self._formulas_loaded:
            return
        self._formulas_loaded = True
        if self.settings is not None:
            names = self.settings.formulas
        elif self.pyproject.exists():
            names = config.formula_modules(config.read_pyproject(self.pyproject), self.pyproject)
        else:
            names = ()
        if names:
            self._importable_root()
            loading.import_modules(names, config.Place.table(self.pyproject, "tool.netbudget").key("formulas"))

    def project_targets(self) -> tuple[dict[str, Target], Target | None]:
        """The project's own targets and its default ``target``: from the configuration the run
        read, else (a plain ``pytest`` run) from only those keys, as ``load_formulas`` does."""
        if self.settings is not None:
            return self.settings.targets, self.settings.target
        if self._targets is None:
            exists = self.pyproject.exists()
            self._targets = (
                config.project_targets(config.read_pyproject(self.pyproject), self.pyproject) if exists else ({}, None)
            )
        return self._targets

    def _importable_root(self) -> None:
        root = str(self.pyproject.parent)
        if root not in sys.path:
            sys.path.insert(0, root)

    def _wants_cuda(self) -> bool:
        models = self.settings.models if self.settings is not None else []
        chosen = [self.options.device] if self.options.device else [spec.device for spec in models]
        return any(device.startswith("cuda") for device in chosen)

    @property
    def baseline_path(self) -> Path:
        return self.settings.baseline if self.settings else self.pyproject.parent / config.DEFAULT_BASELINE

    @property
    def baseline_file(self) -> str:
        """The baseline file as the user names it: relative to pyproject.toml's directory."""
        return os.path.relpath(self.baseline_path, self.pyproject.parent)

    def _load_baseline(self) -> dict[str, BaselineEntry]:
        """The committed baseline: the gate every model is judged against."""
        self.compared_with = f"{self.baseline_file} as checked out (HEAD)"
        if self.settings is None:
            return {}
        try:
            return baseline.load_baseline(self.settings.baseline)
        except baseline.NotABaseline as error:
            raise pytest.UsageError(str(error)) from None
        except baseline.BaselineError as error:
            if self.options.update:  # a full update replaces it; a partial one is refused at the end
                return {}
            raise pytest.UsageError(f"{error}\n{self._repair_hint()}") from None

    def _repair_hint(self) -> str:
        return (
            f"Repair the file (resolve a git conflict, or restore it: git checkout -- {self.baseline_file}), or "
            "write it whole from this code: pytest --netbudget --netbudget-update, with no -k or node id"
        )

    def _load_reference(self) -> dict[str, BaselineEntry] | None:
        """The base branch's figures that the reports show the change against, when asked for."""
        compare, base = self.options.compare, self.options.base
        gate = f"the checked-out {self.baseline_file}"
        if compare:
            if not Path(compare).exists():
                raise pytest.UsageError(f"--netbudget-compare={compare}: no such file")
            self.compared_with = f"the report {compare}; budgets and max_increase: {gate}"
            self.notes.append(f"changes are against {self.compared_with}")
            try:
                return baseline.load(Path(compare))
            except baseline.BaselineError as error:
                # Not ours to rewrite: --netbudget-update writes the baseline, never this file.
                raise pytest.UsageError(
                    f"--netbudget-compare={compare}: {error}; pass a JSON report written by --netbudget-report"
                ) from None
        if not base:
            return None
        try:
            found = baseline.at_revision(base, self.baseline_path)
        except baseline.BaselineError as error:
            raise pytest.UsageError(str(error)) from None
        there = " (no baseline there: every model is new)" if found is None else ""
        self.compared_with = f"{self.baseline_file} at {base}{there}; budgets and max_increase: {gate}"
        self.notes.append(f"changes are against {self.compared_with}")
        return found or {}

    @property
    def models(self) -> list[config.ModelSpec]:
        """The registered models to collect (none without ``--netbudget``)."""
        return self.settings.models if self.options.enabled and self.settings is not None else []

    @property
    def default_device(self) -> str:
        """What a check from a test runs on when it names no device."""
        return self.options.device or (self.settings.device if self.settings else "auto")

    # --- results ------------------------------------------------------------------------------

    def judge(self, result: budgets.Result) -> budgets.Verdict:
        """A result against its limits and its baseline entry, with the layers that changed; the
        change shown against the base branch when one was given."""
        # An update run accepts growth: its figures become the new baseline (budgets still apply).
        previous = self.baseline.get(result.name)
        verdict = budgets.judge(result, previous, accept_growth=self.options.update)
        self._note_estimate_change(verdict, previous, self.baseline_file)
        if self.reference is None:
            return verdict
        other = self.reference.get(result.name)
        self._note_estimate_change(verdict, other, self.compared_with)
        return budgets.compared_with(verdict, other)

    def _note_estimate_change(self, verdict: budgets.Verdict, old: BaselineEntry | None, source: str) -> None:
        """Say when the estimated latency was not compared because its target or table changed."""
        if old is None or verdict.measured is None:
            return
        change = budgets.estimate_change(old, verdict.measured)
        if change is None:
            return
        note = f"{verdict.name}: estimated latency not compared with {source}: its target changed, {change}"
        if not self.options.update:
            note += "; run `pytest --netbudget --netbudget-update` to record the new estimate"
        if note not in self.notes:  # a result is judged for its item and again for the summary
            self.notes.append(note)

    def claim(self, name: str, origin: str) -> str | None:
        """Take ``name`` for the check of test ``origin``; the problem when it is not free: the
        name of a registered model, or of another test's check (one would overwrite the other)."""
        if name in self._registered_names():
            return f"check name {name!r} of {origin} is a model registered in {self.pyproject}: pass another name="
        owner = self._claimed.setdefault(name, origin)
        if owner != origin:
            return f"check name {name!r} of {origin} is already used by {owner}: pass another name="
        return None

    def collect(self, result: budgets.Result) -> None:
        """Keep a result for the summary and the files (on the controller only). A check whose name
        another test took in another pytest-xdist worker is kept as an error of its own."""
        if self.is_worker:
            return
        if result.origin != ORIGIN_PYPROJECT and result.error is None:
            problem = self.claim(result.name, result.origin)
            if problem:
                result = budgets.Result(name=conflicting_name(result), origin=result.origin, error=problem)
                self.notes.append(f"ERROR: {problem}")
                self.failed = True
        self.verdicts.append(self.judge(result))

    def expect(self, names: Iterable[str]) -> None:
        """Registered models this run selected: each one gets a result, whatever happens to it."""
        self._expected.update(name for name in names if name in self._registered_names())

    def no_result(self, name: str, why: str) -> None:
        """A selected model's test ended without a result (its worker died, its setup failed)."""
        if name in self._expected:
            self._no_result.setdefault(name, why)

    def checks_without_results(self, nodeid: str, why: str) -> None:
        """A test that checks models ended without their results (its pytest-xdist worker died):
        one error under its node id, the name its first check has unless it chose another."""
        if self.is_worker or any(verdict.name == nodeid for verdict in self.verdicts):
            return
        error = f"no result: {why} (the checks of this test)"
        self.verdicts.append(self.judge(budgets.Result(name=nodeid, origin=nodeid, error=error)))

    def _results_for_the_missing(self) -> None:
        """An error result for every selected model that has none, saying why."""
        measured = {verdict.name for verdict in self.verdicts}
        for name in sorted(self._expected - measured):
            why = self._no_result.get(name, "the session ended before this model ran (-x, --maxfail or an interrupt)")
            self.verdicts.append(self.judge(budgets.Result(name=name, error=f"no result: {why}")))

    def _registered_names(self) -> set[str]:
        return {spec.name for spec in self.settings.models} if self.settings else set()

    def removed_models(self, entries: dict[str, BaselineEntry] | None = None) -> list[str]:
        """Registered models that have an entry (in ``entries``, by default the baseline read at
        the start) but are no longer in pyproject.toml.

        Checks from tests are never called removed: a run may simply not have selected them.
        """
        present = self._registered_names() | {verdict.name for verdict in self.verdicts}
        return sorted(
            name
            for name, entry in (self.baseline if entries is None else entries).items()
            if name not in present and entry.origin == ORIGIN_PYPROJECT
        )

    def baseline_mismatches(self) -> list[str]:
        """How the committed baseline differs from this run: a model without an entry, or whose
        figures differ (either direction); registered models it still lists are ``removed_models``.
        A model that failed is left out: its own failure says what differs and what to do."""
        problems = []
        for verdict in self.verdicts:
            if verdict.measured is None or not verdict.passed:
                continue
            entry = self.baseline.get(verdict.name)
            if entry is None:
                problems.append(f"{verdict.name} has no entry")
                continue
            differ = baseline.differences(entry, verdict.measured)
            if differ:
                environment = budgets.environment_change(entry, verdict.measured)
                estimate = budgets.estimate_change(entry, verdict.measured)
                environment += [f"target {estimate}"] if estimate else []
                with_it = (
                    f" (with its {budgets.changed_with(environment)}: {', '.join(environment)})" if environment else ""
                )
                problems.append(f"{verdict.name}'s {', '.join(differ)} differ{with_it}")
        return problems

    # --- end -------------------------------------------------------------------------------------

    def finish(self, interrupted: bool = False, say: Callable[[str], None] | None = None) -> bool:
        """Write the reports, the job summary and (on update) the baseline; False when a write failed.

        An ``interrupted`` run (Ctrl-C, an internal error) measured only part of what it was asked
        to: its figures never become the baseline. ``say`` prints at once (while waiting for
        another process's lock on the baseline), where the notes wait for the summary.
        """
        if self.is_worker:
            return True
        self._results_for_the_missing()
        if not self.verdicts:
            return self._nothing_measured()
        self.verdicts = reports.in_report_order(self.verdicts)
        removed = self.removed_models()
        self._stale = self._stale_baseline(removed)
        not_run = self._not_run()
        if not_run:
            self.notes.append(
                f"{len(not_run)} model(s) registered in {self.pyproject.name} were not run ({', '.join(not_run)}): "
                "this run was not given --netbudget, so the reports cover the checks from tests only"
            )
        for path in self.options.reports:
            self._write_report(Path(path), removed)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary and self.options.active:  # a plain pytest run's checks: not asked for
            try:
                with open(step_summary, "a", encoding="utf-8") as stream:
                    stream.write(reports.markdown(self._report(removed)) + "\n")
            except OSError as error:
                self.notes.append(f"could not append to GITHUB_STEP_SUMMARY ({step_summary}): {error.strerror}")
        if self.options.update and interrupted:
            self.notes.append("ERROR: the run was interrupted, so the baseline was not written")
            self.failed = True
        elif self.options.update:
            self._write_baseline(say)
        else:
            self._note_stale_baseline()
        return not self.failed

    def _stale_baseline(self, removed: list[str]) -> list[str]:
        """How the committed baseline does not match this run (nothing for an update, which rewrites it)."""
        if self.options.update:
            return []
        problems = self.baseline_mismatches() + [f"{name} is no longer registered" for name in removed]
        return [reports.NO_BASELINE_YET] if problems and not self.baseline_path.exists() else problems

    def _note_stale_baseline(self) -> None:
        """Say when the baseline no longer matches the run, and how to refresh it; under
        ``--netbudget-check-baseline`` that fails the run (as an obsolete snapshot does)."""
        problems = self._stale
        if not problems:
            return
        verb = "write" if problems == [reports.NO_BASELINE_YET] else "refresh"
        refresh = f"{verb} it with `pytest --netbudget --netbudget-update` and commit {self.baseline_file}"
        if self.options.check_baseline:
            self.failed = True
            self.notes.append(f"ERROR: {self.baseline_file} does not match this run: {'; '.join(problems)}; {refresh}")
        else:
            self.notes.append(f"{self.baseline_file} is out of date: {'; '.join(problems)}; {refresh}")

    def _note_uncounted(self, written: dict[str, BaselineEntry]) -> None:
        """An entry written with ops no formula counts holds MACs and FLOPs short by their work:
        say so, since accepting it makes that figure the gate."""
        for name, entry in sorted(written.items()):
            if entry.uncounted_ops:
                ops = ", ".join(f"{op} x{count}" for op, count in entry.uncounted_ops.items())
                self.notes.append(
                    f"WARNING: {name}'s entry was written with ops that no formula counts ({ops}): their work is "
                    "not in its MACs and FLOPs. Register formulas for them in a module named in [tool.netbudget] "
                    "formulas = [...] (so that every run loads it), then update the baseline again"
                )

    def _report(self, removed: list[str]) -> reports.Report:
        return reports.Report(
            self.verdicts,
            removed,
            self.compared_with,
            self.baseline_file,
            not_run=self._not_run(),
            stale_baseline=self._stale,
            baseline_checked=self.options.check_baseline,
        )

    def _not_run(self) -> list[str]:
        """The registered models of a run not given ``--netbudget``: its reports cover checks only."""
        return [] if self.options.enabled else sorted(self._registered_names())

    def _nothing_measured(self) -> bool:
        """No model and no check ran: say so when a file was asked for. Without ``--netbudget``
        that is a mistake in the command (fail); with it, ``-k`` may simply have selected none."""
        wanted = [f"--netbudget-report={path}" for path in self.options.reports]
        wanted += ["--netbudget-update"] if self.options.update else []
        if not wanted:
            return True
        if self.options.enabled:
            self.notes.append(f"no model or check ran, so nothing was written ({', '.join(wanted)})")
            return True
        self.notes.append(
            f"ERROR: no model or check ran, so nothing was written ({', '.join(wanted)}): "
            "add --netbudget to profile the models registered in pyproject.toml"
        )
        self.failed = True
        return False

    def _write_report(self, path: Path, removed: list[str]) -> None:
        text = REPORT_WRITERS[path.suffix](self._report(removed))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(path, text, "the report")
            self.notes.append(f"report written to {path}")
        except OSError as error:
            self.notes.append(f"ERROR: {path}: cannot write the report: {error.strerror}")
            self.failed = True
        except files.WriteError as error:
            self.notes.append(f"ERROR: {error}")
            self.failed = True

    def _write_baseline(self, say: Callable[[str], None] | None = None) -> None:
        """Merge this run's entries into the file as it is now, under its lock: parallel updates
        (``-k`` shards) each add theirs; models that failed or did not run keep their entries."""
        target = self.baseline_path
        # A model that failed its budget keeps its old entry: its figures are not accepted.
        fresh = {
            verdict.name: verdict.measured
            for verdict in self.verdicts
            if verdict.measured is not None and verdict.passed
        }
        failed = sorted(
            verdict.name for verdict in self.verdicts if verdict.measured is not None and not verdict.passed
        )
        errored = sorted(verdict.name for verdict in self.verdicts if verdict.measured is None)
        unreadable = None
        try:
            with files.locked(target, "the baseline", on_wait=say):
                try:
                    previous = baseline.load_baseline(target)
                except baseline.NotABaseline as error:
                    return self._refuse(str(error))
                except baseline.BaselineError as error:
                    if not self._every_model_ran():
                        return self._refuse(self._partial_over_unreadable(error))
                    previous, unreadable = {}, error  # a full update replaces it, and says so
                removed = set(self.removed_models(previous))
                kept = {name: entry for name, entry in previous.items() if name not in removed}
                baseline.update(target, fresh, kept)
            self.notes.append(f"baseline updated: {target} ({len(fresh)} model(s) written)")
            if unreadable is not None:
                self.notes.append(
                    f"{self.baseline_file} could not be read ({unreadable}) and was replaced by this run's "
                    f"{len(fresh)} model(s)"
                )
            if failed:
                self.notes.append(_not_written(failed, previous, "failed its budget", "failed their budgets"))
            if errored:
                self.notes.append(
                    _not_written(errored, previous, "could not be profiled", "could not be profiled", "fix")
                )
            self._note_uncounted(fresh)
        except files.WriteError as error:
            self.notes.append(f"ERROR: {error}")
            self.failed = True

    def _every_model_ran(self) -> bool:
        """Whether this run selected every registered model (no ``-k``, node id or path left one out)."""
        return self.options.enabled and self._expected >= self._registered_names()

    def _partial_over_unreadable(self, error: baseline.BaselineError) -> str:
        ran = len(self._expected) if self.options.enabled else 0
        return (
            f"{self.baseline_file} could not be read ({error}), so this partial update ({ran} of "
            f"{len(self._registered_names())} registered models) did not write it: it would drop the entries it "
            f"cannot read. {self._repair_hint()}"
        )

    def _refuse(self, why: str) -> None:
        """The baseline is left as it is: a usage error, which ends the run with exit code 4."""
        self.notes.append(f"ERROR: {why}")
        self.failed = True
        self.usage_error = True


def conflicting_name(result: budgets.Result) -> str:
    """A name for a check refused its own: unique, since it carries the test's node id."""
    return f"{result.origin} (name={result.name!r})"


def _not_written(
    names: list[str], previous: dict[str, BaselineEntry], one_did: str, many_did: str, remedy: str = "fit"
) -> str:
    """The note for models an update did not write (they failed their budgets, ``remedy`` "fit", or
    could not be profiled, "fix"): who keeps an old entry, who gets none, and what to do."""
    kept = [name for name in names if name in previous]
    new = [name for name in names if name not in previous]
    parts = []
    if kept:
        parts.append(f"{', '.join(kept)} {'keeps its old entry' if len(kept) == 1 else 'keep their old entries'}")
    if new:
        parts.append(f"{', '.join(new)} {'gets none' if len(new) == 1 else 'get none'}")
    many = len(names) > 1
    todo = (
        f"make {'them' if many else 'it'} fit (or raise {'their' if many else 'its'} limits)"
        if remedy == "fit"
        else f"fix {'them' if many else 'it'} (the error is above)"
    )
    return f"not written: {', '.join(names)} {many_did if many else one_did}, so {' and '.join(parts)}; {todo} and update again"

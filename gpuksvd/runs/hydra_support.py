"""Glue between Hydra and the run layer: the resolvers ``conf/`` uses, the sweep's failure
summary, how the entry scripts report errors, and the checks of torchrun launches and of the
optional launcher and sweeper plugins.

Imported by the entry scripts (and the tests that compose configs) before any config is
composed. The library itself never imports this module, so it keeps running without Hydra.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..data import UnreadableImageError
from ..files import write_json
from .config import SWEEP_DIRNAME_EXCLUDED, ConfigError
from .distributed import launch, log_file_suffix, rank_prefix, record_for_launcher, shared_now
from .run_folder import FAILED_FILE

log = logging.getLogger("gpuksvd")

#: Errors that mean "the input is wrong", not "gpuksvd is wrong": the entry scripts print their
#: message alone (the traceback goes to the run's log), unless debug=true or HYDRA_FULL_ERROR=1.
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, UnreadableImageError, RuntimeError)


def job_dirname(overrides: Sequence[str]) -> str:
    """A sweep job's folder name: its overrides ``key=value`` sorted and joined by commas, without
    the keys that do not change results or are paths (:data:`SWEEP_DIRNAME_EXCLUDED`) and
    without any override whose value holds a slash (a path: it would nest folders). The run's
    config keeps them all. One folder level, whatever the values."""
    kept = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        bare = key.lstrip("+~")
        if bare in SWEEP_DIRNAME_EXCLUDED or "/" in value or "\\" in value:
            continue
        kept.append(f"{bare}={value}")
    name = ",".join(sorted(kept)) or "default"
    name = name.replace(" ", "_")
    if len(name) > 200:  # file systems allow 255 bytes per name
        name = name[:180] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


def register_resolvers() -> None:
    """Register the resolvers ``conf/`` uses (idempotent): ``${gpuksvd.sweep_excluded_keys:}``,
    ``${gpuksvd.job_dirname:…}``, ``${gpuksvd.now:<strftime pattern>}`` (the time, the same in
    every process of a torchrun launch) and ``${gpuksvd.log_suffix:}`` (``.rank<r>`` for the
    ranks other than 0 of a torchrun launch, so that each writes its own log file)."""
    OmegaConf.register_new_resolver("gpuksvd.sweep_excluded_keys", lambda: list(SWEEP_DIRNAME_EXCLUDED),
                                    replace=True)
    OmegaConf.register_new_resolver("gpuksvd.job_dirname", lambda overrides: job_dirname(list(overrides)),
                                    replace=True)
    OmegaConf.register_new_resolver("gpuksvd.now", lambda pattern: shared_now().strftime(pattern), replace=True,
                                    use_cache=True)
    OmegaConf.register_new_resolver("gpuksvd.log_suffix", log_file_suffix, replace=True)
    OmegaConf.register_new_resolver("gpuksvd.gpu_count", gpu_count, replace=True)


def gpu_count(minimum: int = 0, maximum: int | None = None) -> int:
    """The GPUs this machine shows, clipped to [``minimum``, ``maximum``]: the launcher presets'
    defaults (jobs at once for joblib, GPUs per job for submitit's local executor and Ray)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return max(int(minimum), count if maximum is None else min(count, int(maximum)))


#: The presets in ``conf/hydra/launcher/`` and ``conf/hydra/sweeper/`` extend Hydra plugins that
#: are optional extras: preset → (the plugin's module, what to install).
PLUGINS = {
    "hydra/launcher/joblib_gpus": ("hydra_plugins.hydra_joblib_launcher", 'pip install "gpuksvd[cluster]"'),
    "hydra/launcher/joblib": ("hydra_plugins.hydra_joblib_launcher", 'pip install "gpuksvd[cluster]"'),
    "hydra/launcher/slurm": ("hydra_plugins.hydra_submitit_launcher", 'pip install "gpuksvd[cluster]"'),
    "hydra/launcher/submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", 'pip install "gpuksvd[cluster]"'),
    "hydra/launcher/submitit_local": ("hydra_plugins.hydra_submitit_launcher", 'pip install "gpuksvd[cluster]"'),
    "hydra/launcher/ray_gpus": ("hydra_plugins.hydra_ray_launcher", 'pip install "gpuksvd[ray]"'),
    "hydra/launcher/ray": ("hydra_plugins.hydra_ray_launcher", 'pip install "gpuksvd[ray]"'),
    "hydra/sweeper/tune": ("hydra_plugins.hydra_optuna_sweeper", 'pip install "gpuksvd[cluster]"'),
    "hydra/sweeper/optuna": ("hydra_plugins.hydra_optuna_sweeper", 'pip install "gpuksvd[cluster]"'),
}

#: Presets that pick a plugin preset themselves (``experiment=tune`` picks ``hydra/sweeper=tune``).
PICKS_PLUGIN = {"experiment/tune": "hydra/sweeper/tune"}


def plugin_missing(preset: str) -> str | None:
    """What to install for ``preset`` (``"hydra/launcher/slurm"``), or None when it can run."""
    plugin = PLUGINS.get(PICKS_PLUGIN.get(preset, preset))
    if plugin is None:
        return None
    try:
        if importlib.util.find_spec(plugin[0]) is not None:
            return None
    except ModuleNotFoundError:  # no Hydra plugin at all: not even the hydra_plugins package
        pass
    return f"{plugin[1]} (it provides {plugin[0]})"


def check_plugins(arguments: Sequence[str]) -> None:
    """Stop with what to install when the command line picks a preset whose plugin is missing
    (``hydra/launcher=slurm`` without hydra-submitit-launcher …)."""
    for argument in arguments:
        key, _, value = argument.lstrip("+").partition("=")
        missing = plugin_missing(f"{key}/{value}")
        if missing:
            print(f"error: {argument} needs a Hydra plugin that is not installed: {missing}", file=sys.stderr)
            raise SystemExit(2)


def check_launch(multirun: bool) -> None:
    """Refuse a sweep (``-m``) started by torchrun: every process would run the whole sweep."""
    if multirun and launch() is not None:
        raise ConfigError(
            "train.py -m under torchrun: a sweep runs its jobs through a Hydra launcher, each job in its own process "
            "(hydra/launcher=joblib_gpus, slurm or ray_gpus, see conf/hydra/launcher/); torchrun spreads one "
            "fit over several processes: run the sweep's fits one by one with torchrun instead"
        )


class FailedJobsSummary(Callback):
    """Hydra callback: after a sweep, list the jobs that failed in it and exit non-zero.

    Every job that raises writes ``failed.json`` into its folder and the sweep goes on (see
    ``train.py``); this reads those written during this sweep, whichever launcher ran the jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # What is there before the sweep: a failure record is this sweep's when it is new or was
        # rewritten (atomic writes give it a new inode). No clock is compared, so jobs on other
        # machines (SLURM, Ray) with skewed clocks are judged right.
        self.before = self._records(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        before = getattr(self, "before", {})
        failed = sorted(path for path, identity in self._records(sweep_dir).items() if before.get(path) != identity)
        if not failed:
            return
        lines = []
        for path in failed:
            try:
                error = json.loads(path.read_text()).get("error", "failed")
            except (OSError, ValueError):
                error = "failed"
            lines.append(f"  {path.parent.relative_to(sweep_dir)}: {' '.join(str(error).split())[:300]}")
        message = (f"{len(failed)} job(s) of the sweep failed (the others finished; re-run the same command to "
                   f"retry only these):\n" + "\n".join(lines))
        print(message, file=sys.stderr)
        raise SystemExit(1)

    @staticmethod
    def _records(sweep_dir: Path) -> dict[Path, tuple[int, int]]:
        records = {}
        for path in sweep_dir.rglob(FAILED_FILE) if sweep_dir.is_dir() else ():
            try:
                stat = path.stat()
            except OSError:
                continue
            records[path] = (stat.st_ino, stat.st_mtime_ns)
        return records


def report_failure(error: BaseException, run_dir: str | Path, resolved: dict, log_name: str) -> None:
    """Record a failed run in its folder: ``failed.json`` (the error and the config) and the full
    traceback appended to the run's log file."""
    run_dir = Path(run_dir)
    trace = "".join(traceback.format_exception(error))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json({"error": f"{type(error).__name__}: {error}", "config": resolved}, run_dir / FAILED_FILE)
        with open(run_dir / log_name, "a") as stream:
            stream.write(trace)
    except OSError:  # the folder itself may be what failed
        pass


def run_and_report(work: Callable[[], Any], *, run_dir: str | Path, resolved: dict, log_name: str,
                   multirun: bool, debug: bool) -> Any:
    """Call ``work()``; on an error record it in the run folder, then:

    * in a sweep, log it and return None, so that the other jobs go on (the sweep's summary
      reports it and exits non-zero at the end; the Optuna sweeper records a failed trial);
    * for a user mistake (:data:`USER_ERRORS`), print its message alone and exit with status 1,
      the traceback being in the run's log (``debug=true`` or ``HYDRA_FULL_ERROR=1`` prints it);
    * otherwise re-raise (a bug: the traceback is what helps).
    """
    try:
        return work()
    except Exception as error:
        report_failure(error, run_dir, resolved, log_name)
        record_for_launcher(error)  # torchrun's summary shows the message
        if multirun:
            log.error("run failed: %s: %s (traceback in %s)", type(error).__name__, error,
                      Path(run_dir) / log_name)
            # None, not NaN: the Optuna sweeper marks the trial failed and goes on (a NaN aborts it)
            return None
        full = debug or os.environ.get("HYDRA_FULL_ERROR") == "1"
        if isinstance(error, USER_ERRORS) and not full:
            prefix = rank_prefix()  # which process says it, unless the message does already
            prefix = "" if str(error).startswith(prefix.rstrip(": ")) else prefix
            print(f"{prefix}error: {error}\n(the full traceback is in {Path(run_dir) / log_name}; "
                  "debug=true prints it)", file=sys.stderr)
            raise SystemExit(1) from None
        raise


__all__ = ["FailedJobsSummary", "PICKS_PLUGIN", "PLUGINS", "USER_ERRORS", "check_launch", "check_plugins", "gpu_count",
           "job_dirname", "plugin_missing", "register_resolvers", "report_failure", "run_and_report"]

register_resolvers()

"""The command line: ``python -m hpsearch [overrides]`` and the ``hpsearch`` console script.

One Hydra app. Before Hydra runs it, the overrides are composed and validated once, so that a bad
input (unknown experiment, wrong type, value out of range, invalid search space) is one line on
stderr and exit code 2 instead of a traceback; errors found later (data path, weights, storage)
are reported the same way.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hpsearch.config import register_schema, validate_config
from hpsearch.errors import ConfigError, HpsearchError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
EXIT_BAD_INPUT = 2


def _fail(err: Exception) -> None:
    print(f"hpsearch: error: {err}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _one_line(err: BaseException) -> str:
    """Hydra/OmegaConf errors as one line: the message, its cause, and the allowed options."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    if "Available options" in str(err):
        options = []
        for line in lines[lines.index(next(l for l in lines if l.startswith("Available"))) + 1:]:
            if line.startswith("Config search path"):
                break
            options.append(line)
        text += "; available: " + ", ".join(options)
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in text:
            text += f": {first}"
    return text


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with command-line overrides and validate it (ConfigError)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception as err:  # hydra / omegaconf composition and type errors
        raise ConfigError(_one_line(err)) from None
    finally:
        GlobalHydra.instance().clear()
    check_composed(cfg)
    return cfg


def check_composed(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} must be given for experiment {cfg.experiment!r} "
                          f"(e.g. {missing[0]}=...); missing: {', '.join(missing)}")
    try:
        validate_config(cfg)
        if cfg.mode in ("search", "confirm"):
            from hpsearch.schedules import baseline_schedules, study_distributions
            from hpsearch.study.confirm import BASELINES_KEY
            from hpsearch.study.storage import check_connection
            from hpsearch.study.setup import check_enqueue

            distributions = study_distributions(cfg)
            if cfg.mode == "search":
                check_enqueue(cfg, distributions)
                baseline_schedules(cfg)
            if cfg.mode == "confirm" or cfg.study.confirm.auto:
                baseline_schedules(cfg, BASELINES_KEY)
            check_connection(str(cfg.storage.url))  # host, password, database: before torch
    except HpsearchError:
        raise
    except Exception as err:  # interpolation or type errors surfacing on access
        raise ConfigError(_one_line(err)) from None


def run(cfg: DictConfig) -> None:
    """Dispatch on ``mode``."""
    if cfg.mode == "dashboard":
        from hpsearch.review.dashboard import serve_dashboard

        serve_dashboard(cfg)
    elif cfg.mode == "report":
        from hpsearch.review.report import write_report

        write_report(cfg)
    elif cfg.mode == "confirm":
        from hpsearch.study.worker import run_confirm

        run_confirm(cfg)
    else:
        from hpsearch.study.worker import run_search

        run_search(cfg)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except HpsearchError as err:
        _fail(err)


def main() -> None:
    register_schema()
    overrides = [a for a in sys.argv[1:] if not a.startswith("-") and not a.startswith("hydra")]
    if not any(a.startswith("-") for a in sys.argv[1:]):  # --help, --cfg, --multirun: Hydra's
        try:
            cfg = compose_config(overrides)
            if int(cfg.workers) > 1:  # the local launcher: N workers of this same command
                from hpsearch.study.launcher import launch_workers

                sys.exit(launch_workers(cfg, sys.argv[1:]))
        except HpsearchError as err:
            _fail(err)
    _hydra_app()

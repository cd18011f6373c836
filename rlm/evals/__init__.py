"""``rlm.evals``: measure answer quality, on your model and budget, with variance.

    from rlm.evals import Suite, build_methods, run_eval
    methods = build_methods(["base", "rlm-d1"], "openai", {"model_name": "gpt-5-mini"},
                            {"environment": "sandbox"})
    run = run_eval(Suite(methods, ["niah", "oolong"], [8192, 32768], [0, 1, 2]), "out/")
    print(run.report_html)

Pieces: generated task families (``tasks``), loaders for public datasets on disk
(``loaders``), scorers (``scorers``), methods (``methods``: the base model, RLM at any
depth or configuration, ``rlms`` in another interpreter), engines (``local`` threads,
``ray``, imported only when chosen), the resumable result store (``store``) and the
report (``report`` JSON, ``html`` page). ``docs/evals.md`` is the user's guide.
Importing this package never imports Ray.
"""

from rlm.evals.batch import BatchRun, run_batch
from rlm.evals.config import ConfigError, EvalConfig, build_methods, load_config
from rlm.evals.loaders import DATASETS, DatasetError, DatasetSource, load_source
from rlm.evals.methods import MethodError, MethodSpec, preset, rlms_method
from rlm.evals.records import Task, TaskSpec, WorkItem, format_length, parse_length
from rlm.evals.report import build_report
from rlm.evals.runner import EvalRun, run_eval, write_report
from rlm.evals.scorers import SCORERS, score
from rlm.evals.suite import Suite, SuiteError
from rlm.evals.tasks import FAMILIES, make_spec, materialize

__all__ = [
    "DATASETS",
    "FAMILIES",
    "SCORERS",
    "BatchRun",
    "ConfigError",
    "DatasetError",
    "DatasetSource",
    "EvalConfig",
    "EvalRun",
    "MethodError",
    "MethodSpec",
    "Suite",
    "SuiteError",
    "Task",
    "TaskSpec",
    "WorkItem",
    "build_methods",
    "build_report",
    "format_length",
    "load_config",
    "load_source",
    "make_spec",
    "materialize",
    "parse_length",
    "preset",
    "rlms_method",
    "run_batch",
    "run_eval",
    "score",
    "write_report",
]

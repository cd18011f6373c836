"""Run logging: the JSONL trajectory logger and the console printer."""

from rlm.logger.rlm_logger import RLMLogger
from rlm.logger.trajectory import load_trajectory
from rlm.logger.verbose import VerbosePrinter

__all__ = ["RLMLogger", "VerbosePrinter", "load_trajectory"]

"""The worker daemon (`shoal-worker`): runs job tasks in a pool of child processes.

Inside a task, `shoal.worker.report_progress(done, total)` sets the task's progress S_i/S_max_i.
"""

from shoal.worker.child import report_progress

__all__ = ["report_progress"]

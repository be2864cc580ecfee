"""What the commands do: run one job (run.py), look at and stop runs (history.py), and keep the
caches (caches.py). Only the CLI calls in here; it renders what comes back."""

from torchrun_cli.record import Status

# Here, not in history.py: the CLI declares --status with them, and `run` should not pay for
# importing the history (pipeline.json's model, refs, the index) to build its options.
STATUSES = tuple(s.value for s in Status)
SWEEP_PARTIAL = 3  # exit status: some of a sweep's trials failed, not all (README)

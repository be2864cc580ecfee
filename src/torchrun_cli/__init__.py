"""torchjob: run a PyTorch training project with logs, records and clean stops."""

__version__ = "0.1.0"

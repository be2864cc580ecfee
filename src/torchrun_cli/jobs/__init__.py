"""What the commands do: run one job (run.py), look at and stop runs (history.py), and keep the
caches (caches.py). Only the CLI calls in here; it renders what comes back."""

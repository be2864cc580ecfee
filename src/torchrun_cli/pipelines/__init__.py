"""Pipelines: steps that run after others and pass their outputs on. Each step is an ordinary
run (jobs/run.py) in a process of its own; schedule.py starts them as their needs are met,
worker.py is one step's process, resolve.py fills in references, cache.py reuses unchanged
steps, slurm.py hands the whole DAG to Slurm."""

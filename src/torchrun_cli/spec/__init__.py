"""The job spec: the key table, the model, and loading a YAML file merged with flags."""

"""Sweeps: ablation grids, HPO and scaling sweeps in YAML, run by Optuna locally or on a SLURM cluster."""

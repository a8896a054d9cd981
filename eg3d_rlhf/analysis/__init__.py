"""Evaluation of generators and reward models: statistics, image metrics, plots and reports."""

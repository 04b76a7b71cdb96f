"""Robustness reports: one run's report.md and plots; comparisons across runs."""

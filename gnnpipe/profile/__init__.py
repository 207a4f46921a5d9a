"""Communication-volume profiling: analytic volumes per strategy, measured side by side."""

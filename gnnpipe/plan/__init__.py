"""gnnpipe plan: calibrate, simulate the schedule, search ways x stages x chunks (DESIGN §10)."""

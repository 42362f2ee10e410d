import planlock

x: int = planlock.Plan

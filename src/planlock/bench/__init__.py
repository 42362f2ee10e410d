"""planlock.bench: benchmark harnesses (AgentDojo)."""

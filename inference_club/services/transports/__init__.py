"""How the hub reaches an agent: the direct HTTP call or the agent's tunnel."""

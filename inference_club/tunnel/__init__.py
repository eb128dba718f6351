"""The tunnel between hub and agent: wire format (:mod:`.protocol`) and stream multiplexer (:mod:`.mux`).

Shared by both sides; it imports nothing from the hub or the agent.
"""

"""The MQTT contract v1: topics, payload models, command signing and verification.

Depends on nothing of ours; the agent, simulator, hub and API all import it.
"""

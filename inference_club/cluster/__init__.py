"""Live state shared by the replicas of a scaled-out hub (PostgreSQL + Redis + S3).

Nothing here is used by the embedded default: without ``IC_REDIS_URL`` the hub keeps
live state in its own process.
"""

"""The dashboard: server-rendered pages, session routes for their scripts, sign-in."""

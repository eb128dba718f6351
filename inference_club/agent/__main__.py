"""``python -m inference_club.agent``: the agent command on its own."""

from .cli import main

if __name__ == "__main__":
    main()

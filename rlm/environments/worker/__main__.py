"""``python -m rlm.environments.worker``: run the worker on stdin/stdout."""

from rlm.environments.worker.boot import main

if __name__ == "__main__":
    main()

"""The HTTP service: the FastAPI app, its page, client, job registry, scheduler, workers and
Ray executor."""

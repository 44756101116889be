"""Project-level code that both services, fine-tuning and the `modelport` CLI share: the model
store and its sources, settings from the environment, the HTTP error shape and front door (API
keys, admission, graceful shutdown: traffic.py), the database, the container image recipe,
terminal output, and the CLI with the local stack. Nothing here imports a service, except the
CLI, which is where everything is put together."""

"""How the service runs as processes: the HTTP connection guards and the shared port, child processes, the
decoding lanes and their worker processes, the services of the process that holds the models."""

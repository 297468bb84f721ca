"""Running jobs: the job base every job shares (@job), the job references (name and queue, declared
once), the records of every job, the worker heartbeat, the job log context and progress."""

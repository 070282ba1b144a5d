"""Background jobs: the queue (rows and leases), the worker that runs them, what each job kind
does, their parameters, and the admin form that starts one."""

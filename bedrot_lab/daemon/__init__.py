"""The housekeeping daemon: the lake's jobs (the sandbox watcher, checks, clean-up, reports,
reaping) on APScheduler, one daemon per lake, stoppable within seconds, its history kept."""

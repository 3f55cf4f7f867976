"""The driver side of a job: Ray Tune wiring (trainable, callbacks, runner). Thin adapters only:
the search math lives in autopipe.search, trials in autopipe.trial."""

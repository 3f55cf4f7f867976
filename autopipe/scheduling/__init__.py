"""When to stop a trial: the Ray-free stop policy (``policy``), the record the driver's Ray
adapters share about each trial (``ledger``), and the thin Ray Tune scheduler (``ray_scheduler``)."""

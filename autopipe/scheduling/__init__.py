"""When to stop a trial: the Ray-free stop policy (``policy``), the record of each trial the
driver's Ray adapters share (``ledger``) and the cost budget (``budget``). The Ray Tune
scheduler around them is :mod:`autopipe.tune.scheduler`."""

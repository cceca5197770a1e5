"""Orchestration: one module per pipeline step, parameters, pre-flight checks, the cluster
platform config, the local runner (kfp.local), remote submission and compilation.

Component bodies in ``components/`` make one call into a ``*_step`` function here, so every
line of step logic runs under plain pytest.
"""

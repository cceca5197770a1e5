"""datawheel studio: the web page where people try the model, correct it and watch it improve.

A Starlette app in its own process (``datawheel studio``), so the serving hot path stays
lean. It reads the store (ledger, datasets, registry) directly and sends every prediction
and label through the model server's v2 API, so what it does lands in the ledger like any
other traffic. Pages: ``/`` (overview), ``/try``, ``/review``, ``/flywheel``.
"""

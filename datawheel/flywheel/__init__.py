"""The flywheel: served predictions and feedback back into dataset versions, and the
triggers that start retraining. Its stages land here (see docs/ARCHITECTURE.md).
"""

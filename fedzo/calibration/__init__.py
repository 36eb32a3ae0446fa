"""The clock's reference: measured seconds of training steps on the reference host.

``model`` (the calibration file: data, fit, loading), ``measure`` (timing fedzo's own
step), ``validate`` (the clock against client-rounds measured in fresh processes).
"""

"""What walq tells an operator: ``walq status``, ``walq check``, ``walq verify``,
and the watermark-and-gaps arithmetic they share (continuity).

Nothing is imported here: each command loads only the module it needs.
"""

"""The mesh's certificates: which listener serves which one, what each serves now, renewing them in place.

``report`` is pure (the targets of a layout, a certificate's facts, the report rows, ``due``); ``probe`` is the
edge that asks each listener with a TLS handshake; ``rotate`` issues new leaves and has every process load them
without a restart; ``ca_plan`` is the pure plan of a CA rotation (its edge is ``change.rotate_ca``).
"""

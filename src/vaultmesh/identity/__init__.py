"""The workload identity issuer: a local OIDC issuer standing in for platform workload attestation.

Kept empty on purpose so importing the package costs nothing; import the module you need:

- ``vaultmesh.identity.keys``    the key ring on disk (``KeyRing``, ``SigningKey``)
- ``vaultmesh.identity.tokens``  ``mint``, ``discovery_document``, ``jwks``, ``parse_duration`` (pure)
- ``vaultmesh.identity.server``  ``IssuerServer`` (HTTPS discovery + JWKS) and the ``issuer.json`` record
"""
